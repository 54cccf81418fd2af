import NIOCore
import RESP

/// One command sent or queued, and what its reply goes to.
struct RedisPendingReply: Sendable {
    /// Who gets the reply.
    enum Receiver: Sendable {
        case promise(EventLoopPromise<RESPToken>)
        /// Called on the client's event loop.
        case callback(@Sendable (Result<RESPToken, RedisError>) -> Void)

        func complete(_ result: Result<RESPToken, RedisError>) {
            switch self {
            case .promise(let promise):
                switch result {
                case .success(let token): promise.succeed(token)
                case .failure(let error): promise.fail(error)
                }
            case .callback(let callback):
                callback(result)
            }
        }
    }

    var receiver: Receiver
    /// Encoded bytes counted against the client's budget of pending commands; nil for the
    /// connection's handshake commands, which never enter that budget.
    var budgetedBytes: Int?
    /// An `EVALSHA` to send again as `EVAL` if the server answers `NOSCRIPT`.
    var evalFallback: RedisEvalFallback?
}

/// What an `EVALSHA` needs to be sent again as `EVAL`: the script and the command as sent.
struct RedisEvalFallback: Sendable {
    var script: RedisScript
    var command: [RESPArgument]

    /// `EVAL source numkeys ...`: the same command with the script's source for its SHA.
    var evalCommand: [RESPArgument] {
        var command = self.command
        command[0] = .string("EVAL")
        command[1] = .string(self.script.source)
        return command
    }
}
