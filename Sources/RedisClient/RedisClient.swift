public import Logging
public import NIOCore
public import RESP

/// A pipelined Redis command connection.
///
/// Callers on any thread send commands; the client encodes them into one
/// buffer and writes once per event loop tick, however many callers there
/// were. A lost connection fails the commands in flight, and the next command
/// reconnects (after a capped exponential backoff with full jitter, during
/// which commands fail fast so callers can report "temporarily unavailable").
public final class RedisClient: RedisCommandSender, @unchecked Sendable {
    // @unchecked: the `var`s are touched only on `eventLoop` (`send` hops there; `enqueue` asserts it).
    public let eventLoop: any EventLoop
    public let configuration: RedisConfiguration
    private let logger: Logger

    // Confined to `eventLoop`.
    private enum State {
        case disconnected
        case connecting
        case connected(any Channel)
        case closed
    }
    private var state: State = .disconnected
    private var outgoing = ByteBuffer()
    private var outgoingReplies: [RedisPendingReply] = []
    private var flushScheduled = false
    private var failures = 0
    /// Commands enqueued and not yet answered, and their encoded size (bounded by the configuration).
    private var pendingCommands = 0
    private var pendingBytes = 0
    private var retryNotBefore: NIODeadline = .uptimeNanoseconds(0)

    public init(configuration: RedisConfiguration, eventLoop: any EventLoop, logger: Logger) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = logger
    }

    /// Sends one command; the future holds its reply (an error reply fails it with `.server`).
    public func send(_ arguments: [RESPArgument]) -> EventLoopFuture<RESPToken> {
        let promise = self.eventLoop.makePromise(of: RESPToken.self)
        self.submit(.arguments(arguments), RedisPendingReply(receiver: .promise(promise)))
        return promise.futureResult
    }

    /// Queues `command` for `receiver` (a script call by SHA falls back to its source on `NOSCRIPT`).
    func submit(_ command: RedisCommand, receiver: RedisPendingReply.Receiver) {
        self.submit(command, RedisPendingReply(receiver: receiver, noScriptFallback: command.byScriptSource))
    }

    private func submit(_ command: RedisCommand, _ reply: RedisPendingReply) {
        if self.eventLoop.inEventLoop {
            self.enqueue(command, reply)
        } else {
            self.eventLoop.execute { self.enqueue(command, reply) }
        }
    }

    /// Runs a script by SHA, loading it with `EVAL` when the server does not know it (`NOSCRIPT`).
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [RESPArgument]) -> EventLoopFuture<RESPToken> {
        let tail = RESPArgumentList.script(keys: keys, arguments: arguments)
        let promise = self.eventLoop.makePromise(of: RESPToken.self)
        self.evaluate(script, tail, receiver: .promise(promise))
        return promise.futureResult
    }

    /// Runs a script as `evaluate(_:keys:arguments:)` does and hands the reply to `onReply` on
    /// `eventLoop`: for the hot path (every publish is a script), which then needs no future chain
    /// and no array of arguments.
    ///
    /// - Parameter keysAndArguments: the number of keys, the keys, then the arguments.
    public func evaluate(
        _ script: RedisScript, _ keysAndArguments: RESPArgumentList,
        onReply: @escaping @Sendable (Result<RESPToken, RedisError>) -> Void
    ) {
        self.evaluate(script, keysAndArguments, receiver: .callback(onReply))
    }

    /// The same, for a `RedisCommandSender`: one server has no slots, so `slot` is never asked.
    public func evaluate(
        _ script: RedisScript, _ keysAndArguments: RESPArgumentList, slot: () -> UInt16,
        onReply: @escaping @Sendable (Result<RESPToken, RedisError>) -> Void
    ) {
        self.evaluate(script, keysAndArguments, receiver: .callback(onReply))
    }

    private func evaluate(_ script: RedisScript, _ tail: RESPArgumentList, receiver: RedisPendingReply.Receiver) {
        self.submit(.script(script, tail, bySHA: true), receiver: receiver)
    }

    /// Closes the connection; later commands fail.
    public func close() -> EventLoopFuture<Void> {
        self.eventLoop.submit {
            let old = self.state
            self.state = .closed
            self.failOutgoing(RedisError(.connectionClosed, "client closed"))
            if case .connected(let channel) = old { channel.close(promise: nil) }
        }
    }

    private func enqueue(_ command: RedisCommand, _ reply: RedisPendingReply) {
        self.eventLoop.assertInEventLoop()
        if case .closed = self.state {
            reply.receiver.complete(.failure(RedisError(.connectionClosed, "client closed")))
            return
        }
        guard self.pendingCommands < self.configuration.maximumPendingCommands else {
            reply.receiver.complete(.failure(RedisError(.overloaded, "\(self.pendingCommands) commands already waiting for Redis")))
            return
        }
        let start = self.outgoing.writerIndex
        let size = command.write(into: &self.outgoing)
        if self.pendingCommands > 0, self.pendingBytes + size > self.configuration.maximumPendingBytes {
            self.outgoing.moveWriterIndex(to: start)
            reply.receiver.complete(.failure(RedisError(.overloaded, "\(self.pendingBytes) bytes of commands already waiting for Redis")))
            return
        }
        self.pendingCommands += 1
        self.pendingBytes += size
        var reply = reply
        reply.budgetedBytes = size
        self.outgoingReplies.append(reply)
        if !self.flushScheduled {
            self.flushScheduled = true
            self.eventLoop.execute { self.flush() }
        }
    }

    /// Where every command ends, on `eventLoop`: its budget is given back, a `NOSCRIPT` answer to
    /// an `EVALSHA` becomes an `EVAL` of the same command, anything else goes to the receiver.
    private func complete(_ reply: RedisPendingReply, _ result: Result<RESPToken, RedisError>) {
        if let bytes = reply.budgetedBytes {
            self.pendingCommands -= 1
            self.pendingBytes -= bytes
        }
        if case .failure(let error) = result, error.isNoScript, let fallback = reply.noScriptFallback {
            self.enqueue(fallback, RedisPendingReply(receiver: reply.receiver))
            return
        }
        reply.receiver.complete(result)
    }

    private func flush() {
        self.flushScheduled = false
        guard !self.outgoingReplies.isEmpty else { return }
        switch self.state {
        case .connected(let channel):
            let replies = self.outgoingReplies
            let batch = RedisCommandBatch(bytes: self.outgoing, replies: replies)
            self.outgoing = ByteBuffer()
            self.outgoingReplies.removeAll(keepingCapacity: true)
            // A batch that never reaches the handler (the channel closed meanwhile) fails here.
            channel.writeAndFlush(batch).whenFailure { error in
                for reply in replies { self.complete(reply, .failure(RedisError(.connectionClosed, "connection lost: \(error)"))) }
            }
        case .connecting:
            break  // flushed when the connection is ready
        case .disconnected:
            if NIODeadline.now() < self.retryNotBefore {
                self.failOutgoing(RedisError(.connectionClosed, "not connected to Redis (retrying)"))
            } else {
                self.connect()
            }
        case .closed:
            self.failOutgoing(RedisError(.connectionClosed, "client closed"))
        }
    }

    /// Fails the commands not yet written (none of them reached Redis).
    private func failOutgoing(_ error: RedisError) {
        var error = error
        error.wasNotSent = true
        let replies = self.outgoingReplies
        self.outgoing.clear()
        self.outgoingReplies.removeAll()
        for reply in replies { self.complete(reply, .failure(error)) }
    }

    private func connect() {
        self.state = .connecting
        let commandTimeout = self.configuration.commandTimeout
        RedisConnector.connect(configuration: self.configuration, eventLoop: self.eventLoop) { channel in
            // The handler completes every command through `complete`, on this loop.
            let client = NIOLoopBound(self, eventLoop: channel.eventLoop)
            try channel.pipeline.syncOperations.addHandler(
                RedisCommandHandler(commandTimeout: commandTimeout) { reply, result in client.value.complete(reply, result) })
        }.flatMap { channel in
            self.handshake(channel).map { channel }.flatMapErrorThrowing { error in
                // A refused AUTH or HELLO (a rotated password): this connection is done; the next
                // attempt opens another.
                channel.close(promise: nil)
                throw error
            }
        }.whenComplete { result in
            switch result {
            case .success(let channel):
                guard case .connecting = self.state else {
                    channel.close(promise: nil)
                    return
                }
                self.failures = 0
                self.state = .connected(channel)
                self.logger.debug("redis connected", metadata: ["address": "\(self.configuration.host):\(self.configuration.port)"])
                channel.closeFuture.whenComplete { _ in
                    self.eventLoop.execute { self.connectionLost(channel) }
                }
                self.flush()
            case .failure(let error):
                guard case .connecting = self.state else { return }
                self.failures += 1
                self.state = .disconnected
                self.retryNotBefore = .now() + RedisConnector.backoff(attempt: self.failures, configuration: self.configuration)
                self.logger.warning("redis connect failed", metadata: ["error": "\(error)"])
                self.failOutgoing(RedisError(.connectionClosed, "cannot connect to Redis: \(error)"))
            }
        }
    }

    private func handshake(_ channel: any Channel) -> EventLoopFuture<Void> {
        var future = channel.eventLoop.makeSucceededVoidFuture()
        for command in RedisConnector.handshakeCommands(self.configuration, selectDatabase: true) {
            future = future.flatMap {
                var bytes = channel.allocator.buffer(capacity: 64)
                bytes.writeRESPCommand(command)
                let promise = channel.eventLoop.makePromise(of: RESPToken.self)
                channel.writeAndFlush(RedisCommandBatch(bytes: bytes, replies: [RedisPendingReply(receiver: .promise(promise))])).whenFailure { error in
                    promise.fail(RedisError(.connectionClosed, "connection lost: \(error)"))
                }
                return promise.futureResult.map { _ in }
            }
        }
        return future
    }

    private func connectionLost(_ channel: any Channel) {
        guard case .connected(let current) = self.state, current === channel else { return }
        self.state = .disconnected
        self.logger.warning("redis connection lost")
        if !self.outgoingReplies.isEmpty { self.flush() }
    }
}

/// A Lua script run by SHA.
public struct RedisScript: Sendable, Hashable {
    public let source: String
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        self.sha1 = RedisScript.sha1Hex(source)
    }
}
