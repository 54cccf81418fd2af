import NIOCore
import RESP

/// A command as the client queues it, encoded when it is written.
enum RedisCommand: Sendable {
    /// Any command.
    case arguments([RESPArgument])
    /// `EVALSHA sha` (or `EVAL source` when `bySHA` is false), then the script's key count, keys
    /// and arguments.
    case script(RedisScript, RESPArgumentList, bySHA: Bool)

    /// Writes the command; returns its encoded size.
    func write(into buffer: inout ByteBuffer) -> Int {
        switch self {
        case .arguments(let arguments):
            return buffer.writeRESPCommand(arguments)
        case .script(let script, let tail, let bySHA):
            return bySHA
                ? buffer.writeRESPCommand("EVALSHA", .string(script.sha1), tail)
                : buffer.writeRESPCommand("EVAL", .string(script.source), tail)
        }
    }

    /// The same script call by source, sent when the server answers `NOSCRIPT` to the call by SHA.
    var byScriptSource: RedisCommand? {
        guard case .script(let script, let tail, bySHA: true) = self else { return nil }
        return .script(script, tail, bySHA: false)
    }
}
