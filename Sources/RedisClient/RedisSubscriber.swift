public import Logging
public import NIOCore
import RESP

/// A dedicated pub/sub connection.
///
/// On a Redis Cluster it connects to one of the configured nodes, moving to the next after a
/// failed or lost connection: classic `PUBLISH` reaches the subscribers of every node.
///
/// Keeps, per channel, a `RedisChannelStateMachine` that matches what Redis holds; after any reconnect (capped exponential
/// backoff with full jitter) it subscribes to all of them again and then tells
/// its owner, because messages published while it was away are gone and the
/// owner must resynchronise from history. All callbacks run on `eventLoop`.
public final class RedisSubscriber: @unchecked Sendable {
    // @unchecked: the `var`s are touched only on `eventLoop` (every entry point hops there; `handle` asserts it).
    public let eventLoop: any EventLoop
    private let configuration: RedisConfiguration
    private let logger: Logger
    private let onMessage: @Sendable (String, ByteBuffer) -> Void
    private let onResubscribed: @Sendable () -> Void
    /// `SSUBSCRIBE` (Redis Cluster shard channels, on the master of their slot) instead of `SUBSCRIBE`.
    private let sharded: Bool
    /// Sharded: a confirmed subscription Redis dropped unasked (its slot moved elsewhere).
    private let onDropped: @Sendable (String) -> Void
    /// A connection failed or was lost (on a cluster, the slot map may have changed).
    private let onConnectionProblem: @Sendable () -> Void
    /// When the owner wants no more messages for now: reads wait (`RedisReadThrottle`).
    private let readHold: RedisReadHold?

    /// Who waits for a channel's SUBSCRIBE to be confirmed.
    enum Waiter {
        /// A caller of `subscribe(_:)`.
        case caller(EventLoopPromise<Void>)
        /// The resubscription after a reconnect, counted to tell the owner once all are back.
        case resubscribe
        /// A channel the owner follows, subscribed again after Redis refused it: the owner is told
        /// once it is back (what was published meanwhile was missed).
        case retry
    }

    // Confined to `eventLoop`.
    /// Per channel, what Redis holds and what is wanted (channels neither wanted nor held are absent).
    private var channels: [String: RedisChannelStateMachine<Waiter>] = [:]
    private var nextWaiterID: UInt64 = 0
    private var resubscribesOutstanding = 0
    private var channel: (any Channel)?
    private var connecting = false
    private var closed = false
    private var everConnected = false
    private var failures = 0
    /// Error replies that started the subscriber over, since the last confirmed SUBSCRIBE: the
    /// reconnect backs off by them too (a handshake that succeeds resets `failures`, so a refusal
    /// that persists, an ACL that denies a channel, must not reconnect at once, forever).
    private var refusalsInARow = 0
    /// Set by a refusal: every later (re)connect subscribes one channel per command.
    private var subscribesOneByOne = false
    /// What was sent on this connection and not yet answered: an error reply names no channel, and
    /// this says which command it answers.
    private var sent = RedisSentCommands()
    /// Channels the owner follows that Redis refused (non-sharded), and their refusals in a row:
    /// each is subscribed again after a backoff of its own.
    private var refusedChannels: [String: Int] = [:]
    /// On a Redis Cluster, which of `configuration.clusterNodes` to connect to: the next one after
    /// each failed or lost connection (any node of a cluster delivers every PUBLISH).
    private var nodeIndex = 0
    private var handshakePending: [EventLoopPromise<RESPToken>] = []
    /// The connection whose handshake is under way, if one is.
    private var handshaking: (any Channel)?
    /// The last moment reads were held back on purpose (`readHold`): replies due before it may be
    /// waiting behind the held messages.
    private var lastReadHold: NIODeadline?
    /// How long past its command timeout a subscribe may wait while reads are held.
    static let maximumHeldWait = TimeAmount.seconds(60)

    /// - Parameters:
    ///   - firstNode: on a Redis Cluster, which configured node to try first (subscribers of one
    ///     process spread over the nodes).
    ///   - onMessage: a message on a subscribed channel.
    ///   - sharded: subscribe with `SSUBSCRIBE` (a Redis Cluster's shard channels); `configuration`
    ///     then names the one node to connect to.
    ///   - onResubscribed: the connection was lost and is back, subscribed again: messages may have been missed.
    ///   - onDropped: sharded: Redis dropped a confirmed subscription unasked (its slot moved).
    ///   - onConnectionProblem: a connect failed or the connection was lost.
    ///   - readHold: asked before each read from the socket; while it holds, nothing more is read (the
    ///     messages wait at Redis), so an owner that cannot keep up is not flooded.
    public init(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        logger: Logger,
        firstNode: Int = 0,
        sharded: Bool = false,
        onMessage: @escaping @Sendable (String, ByteBuffer) -> Void,
        onResubscribed: @escaping @Sendable () -> Void,
        onDropped: @escaping @Sendable (String) -> Void = { _ in },
        onConnectionProblem: @escaping @Sendable () -> Void = {},
        readHold: RedisReadHold? = nil
    ) {
        self.readHold = readHold
        self.configuration = configuration
        self.sharded = sharded
        self.onDropped = onDropped
        self.onConnectionProblem = onConnectionProblem
        self.nodeIndex = max(firstNode, 0) % max(configuration.clusterNodes.count, 1)
        self.eventLoop = eventLoop
        self.logger = logger
        self.onMessage = onMessage
        self.onResubscribed = onResubscribed
    }

    /// Whether the connection is up.
    public var isConnected: EventLoopFuture<Bool> {
        self.eventLoop.submit { self.channel != nil && !self.connecting }
    }

    /// Subscribes; completes when Redis confirms, or fails after the command timeout (and then the
    /// subscription is withdrawn, unless another caller still waits for it).
    public func subscribe(_ name: String) -> EventLoopFuture<Void> {
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.eventLoop.execute {
            guard !self.closed else { return promise.fail(RedisError(.connectionClosed, "subscriber closed")) }
            self.nextWaiterID &+= 1
            let id = self.nextWaiterID
            let now = NIODeadline.now()
            self.armSubscribeTimeout(name, id: id, promise: promise, from: now, asked: now)
            self.apply(name) { $0.subscribe(id: id, waiter: .caller(promise), connected: self.isReady) }
            self.connectIfNeeded()
        }
        return promise.futureResult
    }

    /// The subscribe `id` fails after the command timeout, counted again from the last time reads were
    /// held back on purpose (its confirmation may be waiting behind the held messages), but at most
    /// `maximumHeldWait` after it was `asked`.
    private func armSubscribeTimeout(
        _ name: String, id: UInt64, promise: EventLoopPromise<Void>, from start: NIODeadline, asked: NIODeadline
    ) {
        let timeout = self.eventLoop.scheduleTask(deadline: start + self.configuration.commandTimeout) {
            if let held = self.lastReadHold, held > start, held - asked < Self.maximumHeldWait {
                return self.armSubscribeTimeout(name, id: id, promise: promise, from: held, asked: asked)
            }
            self.apply(name) { $0.timedOut(id: id) }
        }
        promise.futureResult.whenComplete { _ in timeout.cancel() }
    }

    /// The last moment reads were held back on purpose, if ever (a reply due before it may be
    /// waiting behind the held messages). On `eventLoop`.
    public var lastHeldRead: NIODeadline? {
        self.eventLoop.assertInEventLoop()
        return self.lastReadHold
    }

    /// Unsubscribes (completes at once; later messages for the channel are not delivered).
    public func unsubscribe(_ name: String) -> EventLoopFuture<Void> {
        self.eventLoop.submit {
            self.refusedChannels[name] = nil
            self.apply(name) { $0.unsubscribe() }
        }
    }

    /// Channels subscribed at Redis right now (confirmed and not being unsubscribed), for tests and metrics.
    public var subscribedChannels: EventLoopFuture<Set<String>> {
        self.eventLoop.submit { Set(self.channels.filter { $0.value.isDelivering }.keys) }
    }

    /// Channels with any state (wanted, or held at Redis and not yet confirmed gone).
    public var trackedChannelCount: EventLoopFuture<Int> {
        self.eventLoop.submit { self.channels.count }
    }

    private var isReady: Bool { self.channel != nil && !self.connecting }

    /// Runs one transition of `name`'s machine and performs its actions.
    /// Returns whether the owner's resubscribe entry failed (was refused or withdrawn).
    @discardableResult
    private func apply(
        _ name: String, failure: RedisError? = nil,
        _ transition: (inout RedisChannelStateMachine<Waiter>) -> RedisChannelStateMachine<Waiter>.Actions
    ) -> Bool {
        var machine = self.channels.removeValue(forKey: name) ?? RedisChannelStateMachine()
        let actions = transition(&machine)
        if !machine.isUnsubscribed { self.channels[name] = machine }
        return self.perform(actions, channel: name, failure: failure)
    }

    private var subscribeCommand: RESPArgument { self.sharded ? "SSUBSCRIBE" : "SUBSCRIBE" }
    private var unsubscribeCommand: RESPArgument { self.sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE" }

    /// Returns whether the owner's resubscribe entry failed.
    @discardableResult
    private func perform(_ actions: RedisChannelStateMachine<Waiter>.Actions, channel name: String, failure: RedisError? = nil) -> Bool {
        if let command = actions.send, let channel = self.channel, !self.connecting {
            self.write([command == .subscribe ? self.subscribeCommand : self.unsubscribeCommand, .string(name)], on: channel)
            self.sent.sent(command == .subscribe ? .subscribe(name) : .unsubscribe(name))
        }
        for waiter in actions.succeed {
            switch waiter {
            case .caller(let promise): promise.succeed()
            case .resubscribe: self.resubscribed()
            case .retry:
                self.refusedChannels[name] = nil
                self.onResubscribed()
            }
        }
        if !actions.fail.isEmpty {
            let error = failure ?? RedisError(.timeout, "SUBSCRIBE \(name) not confirmed (timed out, withdrawn, or the connection was lost)")
            var ownerRefused = false
            for waiter in actions.fail {
                switch waiter {
                case .caller(let promise): promise.fail(error)
                case .resubscribe:
                    // The resubscribe after a reconnect is over here (refused: its slot moved
                    // meanwhile, or an ACL; or withdrawn): the others still say "resubscribed".
                    self.resubscribed()
                    ownerRefused = true
                case .retry:
                    ownerRefused = true
                }
            }
            return ownerRefused
        }
        return false
    }

    private func resubscribed() {
        guard self.resubscribesOutstanding > 0 else { return }
        self.resubscribesOutstanding -= 1
        if self.resubscribesOutstanding == 0 {
            self.logger.info("redis subscriber resubscribed")
            self.onResubscribed()
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
            for var machine in self.channels.values {
                for waiter in machine.close() { if case .caller(let promise) = waiter { promise.fail(error) } }
            }
            self.channels.removeAll()
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
        var target = self.configuration
        if target.isCluster, !self.sharded {
            target = target.node(target.clusterNodes[self.nodeIndex % target.clusterNodes.count])
        }
        let handshakeTimeout = target.commandTimeout
        RedisConnector.connect(configuration: target, eventLoop: self.eventLoop) { channel in
            let handler = RedisSubscriberHandler { event in loopBound.value.handle(event) }
            try channel.pipeline.syncOperations.addHandler(handler)
        }.flatMap { channel in
            // The handshake has the command timeout, and a connection that drops during it fails it
            // (the handler says nothing of a close): a Redis that accepts and never answers HELLO or
            // AUTH must not leave the subscriber connecting for good. A failed handshake's
            // connection is closed, not left open behind the next attempt.
            self.handshaking = channel
            channel.closeFuture.whenComplete { _ in
                let subscriber = loopBound.value
                guard subscriber.handshaking === channel else { return }
                subscriber.failHandshake(RedisError(.connectionClosed, "connection lost during the handshake"))
            }
            let deadline = channel.eventLoop.scheduleTask(in: handshakeTimeout) { channel.close(promise: nil) }
            return self.handshake(channel).map { channel }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }.always { _ in deadline.cancel() }
        }.whenComplete { result in
            self.connecting = false
            self.handshaking = nil
            switch result {
            case .success(let channel):
                if self.closed {
                    channel.close(promise: nil)
                    return
                }
                if let readHold = self.readHold {
                    // After the handshake, which must not wait for the node's deliveries.
                    let throttle = RedisReadThrottle(hold: readHold, logger: self.logger) { [weak self] at in
                        self?.lastReadHold = at
                    }
                    guard (try? channel.pipeline.syncOperations.addHandler(throttle, position: .first)) != nil else {
                        channel.close(promise: nil)
                        self.failures += 1
                        self.scheduleReconnect()
                        return
                    }
                }
                self.failures = 0
                self.channel = channel
                channel.closeFuture.whenComplete { _ in self.eventLoop.execute { self.lost(channel) } }
                self.subscribeAll(on: channel)
            case .failure(let error):
                self.failures += 1
                self.logger.warning("redis subscriber connect failed", metadata: ["error": "\(error)"])
                self.onConnectionProblem()
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

    /// After a (re)connect: every wanted channel in one SUBSCRIBE; after a reconnect, tell the owner
    /// once all are confirmed (messages published meanwhile are gone).
    private func subscribeAll(on channel: any Channel) {
        let wasReconnect = self.everConnected
        self.everConnected = true
        var names: [String] = []
        var outstanding = 0
        for name in Array(self.channels.keys) {
            // Only a channel that was delivering when the connection went is owed a catch-up (one
            // never confirmed has callers, answered by its confirmation, and no messages missed).
            let owed = wasReconnect && self.channels[name]!.wasDelivering(resubscribeID: 0)
            let extra: [RedisChannelStateMachine<Waiter>.Entry] = owed ? [(id: 0, waiter: .resubscribe)] : []
            if self.channels[name]!.connected(adding: extra) {
                names.append(name)
                if owed { outstanding += 1 }
            }
        }
        self.resubscribesOutstanding = outstanding
        if self.sharded || self.subscribesOneByOne {
            // One slot per SSUBSCRIBE (and, after a refusal, one channel per SUBSCRIBE).
            for name in names {
                self.write([self.subscribeCommand, .string(name)], on: channel)
                self.sent.sent(.subscribe(name))
            }
        } else if !names.isEmpty {
            self.write(["SUBSCRIBE"] + names.map { .string($0) }, on: channel)
            self.sent.sent(.batch(Set(names)))
        }
        if wasReconnect, outstanding == 0 { self.onResubscribed() }
    }

    private func handle(_ event: RedisSubscriberEvent) {
        self.eventLoop.assertInEventLoop()
        switch event {
        case .message(let name, let payload):
            if self.channels[name]?.isDelivering == true { self.onMessage(name, payload) }
        case .subscribed(let name):
            self.sent.subscribeConfirmed(name)
            self.refusedChannels[name] = nil  // back, however it came back: its refusals are over
            self.apply(name) { $0.subscribeConfirmed() }
            // Started over for a refusal: the backoff starts over once nothing waits to be confirmed
            // (not at a neighbour's confirmation while the refused one still waits).
            if !self.channels.values.contains(where: \.awaitsSubscribeConfirmation) { self.refusalsInARow = 0 }
        case .unsubscribed(let name):
            var dropped = false
            self.apply(name) { machine in
                dropped = machine.droppedByServer()
                return dropped ? .none : machine.unsubscribeConfirmed()
            }
            if !dropped { self.sent.unsubscribeConfirmed(name) }
            if dropped { self.onDropped(name) }
        case .reply(let token):
            if !self.handshakePending.isEmpty {
                self.handshakePending.removeFirst().succeed(token)
            } else if let message = token.errorMessage {
                self.refused(message)
            }
        }
    }

    /// An error reply outside the handshake: a refused (S)SUBSCRIBE. A redirection names the slot,
    /// so the subscriptions of that slot not yet confirmed fail with it (the caller goes where it says).
    private func refused(_ message: String) {
        let error = RedisError(.server, message)
        self.logger.debug("redis subscriber command refused", metadata: ["error": "\(message)"])
        let redirection = RedisRedirection(errorMessage: message)
        let answered = self.sent.refused(redirectedSlot: redirection?.slot, slotOf: RedisHashSlot.slot(of:))
        guard let redirection else {
            self.onConnectionProblem()
            if case .subscribe(let name) = answered {
                // (One no longer awaiting its confirmation, withdrawn and forgotten meanwhile: nothing to do.)
                guard self.channels[name]?.awaitsSubscribeConfirmation == true else { return }
                // Refused, and known to be this channel's (NOPERM: an ACL that denies it; BUSY): its
                // callers fail, the owner's catch-up no longer waits for it, the others go on. One the
                // owner follows is tried again: where its slot is now (sharded), or after a backoff.
                self.logger.warning("redis refused a subscription", metadata: ["channel": "\(name)", "error": "\(message)"])
                let wanted = self.channels[name]?.isSubscribingAndWanted == true
                let ownerRefused = self.apply(name, failure: error) { $0.subscribeRefused() }
                guard wanted, ownerRefused else { return }
                if self.sharded { self.onDropped(name) } else { self.retryRefused(name) }
                return
            }
            // A SUBSCRIBE of several channels refused whole, an UNSUBSCRIBE refused (BUSY), or an
            // answer to nothing known: what Redis holds is no longer known. Starting over on a new
            // connection sends every wanted channel again (after a backoff that grows with each
            // such refusal); a channel left waiting would wait for good (a resubscribe has no
            // timeout, and a later caller only joins it).
            if answered == .nothing, !self.channels.values.contains(where: \.awaitsSubscribeConfirmation) { return }
            self.refusalsInARow += 1
            // From now on one channel per SUBSCRIBE: Redis refuses a batch whole when it denies one
            // of its channels, so the others are confirmed and delivered between the attempts.
            self.subscribesOneByOne = true
            self.logger.warning("redis subscriber command refused; reconnecting", metadata: ["error": "\(message)"])
            self.channel?.close(promise: nil)
            return
        }
        for name in Array(self.channels.keys) where RedisHashSlot.slot(of: name) == redirection.slot {
            // Refused while still wanted (not being withdrawn): the channel goes where its slot is
            // now, when no caller waits for it (a resubscribe: the placement holds it as subscribed).
            let wanted = self.channels[name]?.isSubscribingAndWanted == true
            let resubscribeRefused = self.apply(name, failure: error) { $0.subscribeRefused() }
            if wanted, resubscribeRefused { self.onDropped(name) }
        }
    }

    /// Subscribes `name` again after a backoff that grows with the refusals in a row, unless the
    /// owner unsubscribed it meanwhile (or subscribed it again itself).
    private func retryRefused(_ name: String) {
        let refusals = (self.refusedChannels[name] ?? 0) + 1
        self.refusedChannels[name] = refusals
        let delay = RedisConnector.backoff(attempt: refusals, configuration: self.configuration)
        self.eventLoop.scheduleTask(in: max(delay, .milliseconds(100))) {
            // (Joins a caller's SUBSCRIBE in flight, or succeeds at once when it is subscribed.)
            guard !self.closed, self.refusedChannels[name] != nil else { return }
            self.apply(name) { $0.subscribe(id: 0, waiter: .retry, connected: self.isReady) }
            self.connectIfNeeded()
        }
    }

    private func failHandshake(_ error: RedisError) {
        let pending = self.handshakePending
        self.handshakePending.removeAll()
        for promise in pending { promise.fail(error) }
    }

    private func lost(_ channel: any Channel) {
        guard self.channel === channel else { return }
        self.channel = nil
        self.sent.removeAll()
        for p in self.handshakePending { p.fail(RedisError(.connectionClosed, "connection lost")) }
        self.handshakePending.removeAll()
        // Redis dropped every subscription with the connection: wanted channels wait for the next one.
        self.resubscribesOutstanding = 0
        for name in Array(self.channels.keys) { self.apply(name) { $0.connectionLost() } }
        guard !self.closed else { return }
        self.logger.warning("redis subscriber connection lost")
        self.onConnectionProblem()
        self.failures += 1
        self.scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard !self.closed else { return }
        self.nodeIndex = (self.nodeIndex + 1) % max(self.configuration.clusterNodes.count, 1)
        let delay = RedisConnector.backoff(attempt: max(self.failures, self.refusalsInARow), configuration: self.configuration)
        self.eventLoop.scheduleTask(in: delay) { self.connectIfNeeded() }
    }

    /// Connects now (normally the first subscribe does).
    public func start() {
        self.eventLoop.execute { self.connectIfNeeded() }
    }
}
