public import Logging
public import NIOCore
public import RESP

/// What the broker and the balancer send commands through: one server (`RedisClient`) or a
/// Redis Cluster (`RedisClusterClient`), chosen by the configuration (`makeCommandSender`).
public protocol RedisCommandSender: AnyObject, Sendable {
    /// Where replies and callbacks complete.
    var eventLoop: any EventLoop { get }

    /// Sends one command; the future holds its reply (an error reply fails it with `.server`).
    /// On a cluster the command goes to the master of its first key (`arguments[1]`), except for
    /// commands without keys (`PUBLISH`, `PING`, ...), which any node takes.
    func send(_ arguments: [RESPArgument]) -> EventLoopFuture<RESPToken>

    /// Runs a script by SHA, loading it when the server does not know it (`NOSCRIPT`); on a cluster
    /// on the master of its first key (every key of one call must share a slot).
    func evaluate(_ script: RedisScript, keys: [String], arguments: [RESPArgument]) -> EventLoopFuture<RESPToken>

    /// Runs a script as `evaluate(_:keys:arguments:)` does and hands the reply to `onReply` on
    /// `eventLoop`: for the hot path, with no future chain and no array of arguments.
    ///
    /// - Parameters:
    ///   - keysAndArguments: the number of keys, the keys, then the arguments.
    ///   - slot: the slot of the keys (`RedisHashSlot`), asked for only on a cluster.
    func evaluate(
        _ script: RedisScript, _ keysAndArguments: RESPArgumentList, slot: () -> UInt16,
        onReply: @escaping @Sendable (Result<RESPToken, RedisError>) -> Void
    )

    /// Closes every connection; later commands fail.
    func close() -> EventLoopFuture<Void>
}

extension RedisCommandSender {
    /// Sends one command.
    public func send(_ arguments: RESPArgument...) -> EventLoopFuture<RESPToken> {
        self.send(arguments)
    }

    /// The values of `keys` (nil where a key does not exist), in order: one `GET` each, pipelined
    /// (`MGET` would need every key in one slot of a cluster).
    public func values(of keys: [String]) -> EventLoopFuture<[ByteBuffer?]> {
        guard !keys.isEmpty else { return self.eventLoop.makeSucceededFuture([]) }
        return EventLoopFuture.whenAllSucceed(keys.map { self.send(["GET", .string($0)]) }, on: self.eventLoop)
            .map { replies in replies.map { $0.bytes } }
    }
}

extension RESPArgumentList {
    /// The tail of a script call (`EVALSHA sha` + this): the number of keys, the keys, the arguments.
    static func script(keys: [String], arguments: [RESPArgument]) -> RESPArgumentList {
        var tail = RESPArgumentList()
        tail.append(.integer(Int64(keys.count)))
        for key in keys { tail.append(.string(key)) }
        for argument in arguments { tail.append(argument) }
        return tail
    }
}

extension RedisConfiguration {
    /// A client for commands: a `RedisClusterClient` for a `redis+cluster://` configuration,
    /// else a `RedisClient`.
    public func makeCommandSender(eventLoop: any EventLoop, logger: Logger) -> any RedisCommandSender {
        if self.isCluster {
            return RedisClusterClient(configuration: self, eventLoop: eventLoop, logger: logger)
        }
        return RedisClient(configuration: self, eventLoop: eventLoop, logger: logger)
    }
}
