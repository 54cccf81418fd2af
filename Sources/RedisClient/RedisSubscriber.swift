public import Logging
public import NIOCore
import RESP

/// A dedicated pub/sub connection.
///
/// Keeps the set of wanted channels; after any reconnect (capped exponential
/// backoff with full jitter) it subscribes to all of them again and then tells
/// its owner, because messages published while it was away are gone and the
/// owner must resynchronise from history. All callbacks run on `eventLoop`.
public final class RedisSubscriber: @unchecked Sendable {
    public let eventLoop: any EventLoop
    private let configuration: RedisConfiguration
    private let logger: Logger
    private let onMessage: @Sendable (String, ByteBuffer) -> Void
    private let onResubscribed: @Sendable () -> Void

    // Confined to `eventLoop`.
    private var wanted: Set<String> = []
    /// Per channel, one group of waiters per SUBSCRIBE sent and not yet confirmed.
    private var unconfirmed: [String: [[EventLoopPromise<Void>]]] = [:]
    private var waiting: [String: [EventLoopPromise<Void>]] = [:]
    private var channel: (any Channel)?
    private var connecting = false
    private var closed = false
    private var everConnected = false
    private var failures = 0
    private var handshakePending: [EventLoopPromise<RESPToken>] = []

    /// - Parameters:
    ///   - onMessage: a message on a subscribed channel.
    ///   - onResubscribed: the connection was lost and is back, subscribed again: messages may have been missed.
    public init(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        logger: Logger,
        onMessage: @escaping @Sendable (String, ByteBuffer) -> Void,
        onResubscribed: @escaping @Sendable () -> Void
    ) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = logger
        self.onMessage = onMessage
        self.onResubscribed = onResubscribed
    }

    /// Whether the connection is up.
    public var isConnected: EventLoopFuture<Bool> {
        self.eventLoop.submit { self.channel != nil && !self.connecting }
    }

    /// Subscribes; completes when Redis confirms (or fails after the command timeout).
    public func subscribe(_ name: String) -> EventLoopFuture<Void> {
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.eventLoop.execute {
            guard !self.closed else { return promise.fail(RedisError(.connectionClosed, "subscriber closed")) }
            self.wanted.insert(name)
            let timeout = self.eventLoop.scheduleTask(in: self.configuration.commandTimeout) {
                promise.fail(RedisError(.timeout, "SUBSCRIBE \(name) not confirmed"))
            }
            promise.futureResult.whenComplete { _ in timeout.cancel() }
            if let channel = self.channel, !self.connecting {
                if var groups = self.unconfirmed[name], !groups.isEmpty {
                    groups[groups.count - 1].append(promise)
                    self.unconfirmed[name] = groups
                } else {
                    self.unconfirmed[name, default: []].append([promise])
                    self.write(["SUBSCRIBE", .string(name)], on: channel)
                }
            } else {
                self.waiting[name, default: []].append(promise)
                self.connectIfNeeded()
            }
        }
        return promise.futureResult
    }

    /// Unsubscribes (completes at once; later messages for the channel are not delivered).
    public func unsubscribe(_ name: String) -> EventLoopFuture<Void> {
        self.eventLoop.submit {
            guard self.wanted.remove(name) != nil else { return }
            if let channel = self.channel, !self.connecting {
                self.write(["UNSUBSCRIBE", .string(name)], on: channel)
            }
        }
    }

    /// Drops the connection and reconnects (for a connection that looks alive but delivers nothing).
    public func reconnect() {
        self.eventLoop.execute {
            self.logger.warning("redis subscriber reconnecting on request")
            self.channel?.close(promise: nil)
        }
    }

    public func close() -> EventLoopFuture<Void> {
        self.eventLoop.submit {
            self.closed = true
            self.channel?.close(promise: nil)
            self.channel = nil
            let error = RedisError(.connectionClosed, "subscriber closed")
            for promises in self.waiting.values { for p in promises { p.fail(error) } }
            for groups in self.unconfirmed.values { for group in groups { for p in group { p.fail(error) } } }
            self.waiting.removeAll()
            self.unconfirmed.removeAll()
        }
    }

    private func write(_ command: [RESPArgument], on channel: any Channel) {
        var bytes = channel.allocator.buffer(capacity: 64)
        bytes.writeRESPCommand(command)
        channel.writeAndFlush(bytes, promise: nil)
    }

    private func connectIfNeeded() {
        guard self.channel == nil, !self.connecting, !self.closed else { return }
        self.connecting = true
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        RedisConnector.connect(configuration: self.configuration, eventLoop: self.eventLoop) { channel in
            let handler = RedisSubscriberHandler { event in loopBound.value.handle(event) }
            try channel.pipeline.syncOperations.addHandler(handler)
        }.flatMap { channel in
            self.handshake(channel).map { channel }
        }.whenComplete { result in
            self.connecting = false
            switch result {
            case .success(let channel):
                if self.closed {
                    channel.close(promise: nil)
                    return
                }
                self.failures = 0
                self.channel = channel
                channel.closeFuture.whenComplete { _ in self.eventLoop.execute { self.lost(channel) } }
                self.subscribeAll(on: channel)
            case .failure(let error):
                self.failures += 1
                self.logger.warning("redis subscriber connect failed", metadata: ["error": "\(error)"])
                self.scheduleReconnect()
            }
        }
    }

    private func handshake(_ channel: any Channel) -> EventLoopFuture<Void> {
        var future = channel.eventLoop.makeSucceededVoidFuture()
        for command in RedisConnector.handshakeCommands(self.configuration, selectDatabase: false) {
            future = future.flatMap {
                let promise = channel.eventLoop.makePromise(of: RESPToken.self)
                self.handshakePending.append(promise)
                self.write(command, on: channel)
                return promise.futureResult.flatMapThrowing { token in
                    if let message = token.errorMessage { throw RedisError(.server, message) }
                }
            }
        }
        return future
    }

    /// After a (re)connect: every wanted channel in one SUBSCRIBE; tell the owner once all are confirmed.
    private func subscribeAll(on channel: any Channel) {
        let names = Array(self.wanted)
        let wasReconnect = self.everConnected
        self.everConnected = true
        guard !names.isEmpty else {
            if wasReconnect { self.onResubscribed() }
            return
        }
        var all: [EventLoopFuture<Void>] = []
        for name in names {
            var group = self.waiting.removeValue(forKey: name) ?? []
            let confirmation = self.eventLoop.makePromise(of: Void.self)
            group.append(confirmation)
            self.unconfirmed[name, default: []].append(group)
            all.append(confirmation.futureResult)
        }
        self.write(["SUBSCRIBE"] + names.map { .string($0) }, on: channel)
        if wasReconnect {
            EventLoopFuture.andAllSucceed(all, on: self.eventLoop).whenSuccess {
                self.logger.info("redis subscriber resubscribed", metadata: ["channels": "\(names.count)"])
                self.onResubscribed()
            }
        }
    }

    private func handle(_ event: RedisSubscriberEvent) {
        switch event {
        case .message(let name, let payload):
            if self.wanted.contains(name) { self.onMessage(name, payload) }
        case .subscribed(let name):
            guard var groups = self.unconfirmed[name], !groups.isEmpty else { return }
            let group = groups.removeFirst()
            self.unconfirmed[name] = groups.isEmpty ? nil : groups
            for promise in group { promise.succeed() }
        case .unsubscribed:
            break
        case .reply(let token):
            guard !self.handshakePending.isEmpty else { return }
            self.handshakePending.removeFirst().succeed(token)
        }
    }

    private func lost(_ channel: any Channel) {
        guard self.channel === channel else { return }
        self.channel = nil
        for p in self.handshakePending { p.fail(RedisError(.connectionClosed, "connection lost")) }
        self.handshakePending.removeAll()
        // Unconfirmed subscribes wait for the next connection.
        for (name, groups) in self.unconfirmed {
            for group in groups { self.waiting[name, default: []].append(contentsOf: group) }
        }
        self.unconfirmed.removeAll()
        guard !self.closed else { return }
        self.logger.warning("redis subscriber connection lost")
        self.failures += 1
        self.scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard !self.closed else { return }
        let delay = RedisConnector.backoff(attempt: self.failures, configuration: self.configuration)
        self.eventLoop.scheduleTask(in: delay) { self.connectIfNeeded() }
    }

    /// Connects now (normally the first subscribe does).
    public func start() {
        self.eventLoop.execute { self.connectIfNeeded() }
    }
}
