import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import SwitchboardCore

/// The client's state and I/O, confined to its event loop: a thin shell that opens connections,
/// sends commands, routes what the node sends, and does what `ConnectionStateMachine` and
/// `SubscriptionTable` decide.
final class ClientDriver {
    /// A command sent on the current connection, waiting for its answer.
    enum InFlight {
        case connect
        /// A subscribe of the table's entry `serial` for `channel` (a later entry for the same
        /// channel, after an unsubscribe, does not take its answer). Removed at its deadline, so a
        /// late answer finds nothing here.
        case subscribe(channel: String, serial: UInt64)
        /// A new connection token.
        case refresh
        /// A new subscription token for the table's entry `serial` of `channel`.
        case subRefresh(channel: String, serial: UInt64)
        /// A request of the app, by its key in `requests`.
        case request(UInt64)
    }

    /// Where a channel's subscription tokens come from, the last one it gave, and the timer that
    /// asks for the next before it expires.
    private struct TokenSource {
        var getToken: @Sendable (String) async throws -> String
        var token: String?
        var refresh: Scheduled<Void>?
    }

    /// A request of the app: sent when connected, answered or failed once.
    private struct PendingRequest {
        var command: OutgoingCommand
        var promise: EventLoopPromise<JSONObject>
        var timeout: Scheduled<Void>?
        /// The id it went out with on the current connection (its answer's key in `inFlight`).
        var sentID: UInt64?
    }

    let eventLoop: any EventLoop
    let configuration: SwitchboardClientConfiguration
    let logger: Logger
    var machine: ConnectionStateMachine
    var subscriptions = SubscriptionTable()
    var streams: [String: AsyncStream<SubscriptionEvent>.Continuation] = [:]
    private var tokenSources: [String: TokenSource] = [:]
    private var observers: [UInt64: AsyncStream<ConnectionState>.Continuation] = [:]
    private var nextObserver: UInt64 = 0
    private(set) var state = ConnectionState.disconnected(code: nil, reason: "")

    /// Long-polling's `client`: picked once, sent with every poll (a node holds at most two polls per id).
    let pollClientID = String((0..<12).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! })

    /// Counts connection attempts; callbacks of an older one are ignored.
    var generation: UInt64 = 0
    var connection: (any ClientConnection)?
    var nextID: UInt64 = 1
    var inFlight: [UInt64: InFlight] = [:]
    /// Channels whose subscription is being made again because of a hole in the long-poll answer
    /// being read: the rest of that answer is not for them (the next poll asks from the position).
    var pollSkipping: Set<String> = []
    private var requests: [UInt64: PendingRequest] = [:]
    /// Keys of requests waiting for a connection, oldest first.
    private var queue: [UInt64] = []
    private var nextRequestKey: UInt64 = 0
    private var connectedWaiters: [EventLoopPromise<ConnectResult>] = []
    private var expectsPong = false
    /// What the node's `disconnect` push said about the connection that is ending (SSE has no close
    /// frame: its code comes from here).
    private var serverDisconnect: (code: UInt16, reason: String, reconnect: Bool)?
    /// While connected over a fallback transport: the next WebSocket probe, or the probe under way.
    var climbBackProbe = ClimbBackProbe.idle
    private var reconnectTimer: Scheduled<Void>?
    private var connectDeadline: Scheduled<Void>?
    private var livenessCheck: Scheduled<Void>?
    private var tokenRefresh: Scheduled<Void>?
    /// Per channel being subscribed on the current connection, its one timer: the deadline of its
    /// `subscribe` in flight, or the delay before it is sent again. Cancelled when the answer comes,
    /// on unsubscribe and when the connection ends; at most one per channel followed.
    private var subscribeTimers: [String: Scheduled<Void>] = [:]
    var lastReceived = NIODeadline.now()
    /// When the client last sent a `ping` of its own (the node sending none).
    private var lastClientPing = NIODeadline.uptimeNanoseconds(0)
    /// Publications handed to subscribers so far: whether a long-poll answer brought anything.
    var publicationsDelivered: UInt64 = 0
    private var sslContext: NIOSSLContext?

    init(eventLoop: any EventLoop, configuration: SwitchboardClientConfiguration, logger: Logger) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.logger = logger
        self.machine = ConnectionStateMachine(
            backoff: ReconnectBackoff(
                minimumNanoseconds: configuration.minimumReconnectDelay.nanoseconds,
                maximumNanoseconds: configuration.maximumReconnectDelay.nanoseconds),
            renewsTokens: configuration.getToken != nil, transports: configuration.transports)
    }

    // MARK: the app's calls

    func connect() {
        if case .closed = self.machine.state {
            self.machine.backoff.reset()
        }
        guard case .openConnection = self.machine.start() else { return }
        self.reconnectTimer?.cancel()
        self.reconnectTimer = nil
        self.openConnection()
    }

    func waitUntilConnected() -> EventLoopFuture<ConnectResult> {
        switch self.state {
        case .connected(let result):
            return self.eventLoop.makeSucceededFuture(result)
        case .closed(let code, let reason):
            return self.eventLoop.makeFailedFuture(ClientError.closed(code: code, reason: reason))
        case .disconnected where self.machine.state == .idle:
            return self.eventLoop.makeFailedFuture(ClientError.invalidRequest("connect() was not called"))
        case .disconnected, .connecting:
            let promise = self.eventLoop.makePromise(of: ConnectResult.self)
            self.connectedWaiters.append(promise)
            return promise.futureResult
        }
    }

    func close() {
        guard self.machine.close() else { return }
        self.stop(code: nil, reason: "closed by the client")
    }

    func observeState() -> AsyncStream<ConnectionState> {
        let (stream, continuation) = AsyncStream.makeStream(of: ConnectionState.self, bufferingPolicy: .bufferingNewest(64))
        let key = self.nextObserver
        self.nextObserver += 1
        continuation.yield(self.state)
        self.observers[key] = continuation
        return stream
    }

    func subscribe(
        _ channel: String, since: StreamPosition?, getToken: (@Sendable (String) async throws -> String)?
    ) throws(ClientError) -> AsyncStream<SubscriptionEvent> {
        do {
            try ChannelName.validate(channel)
        } catch {
            throw .invalidRequest("invalid channel name: \(error.message)")
        }
        guard self.subscriptions.add(channel, since: since, usesToken: getToken != nil) else {
            throw .invalidRequest(self.subscriptions.entry(channel) == nil ? "too many subscriptions" : "already subscribed to \(channel)")
        }
        // Two above the limit: the event past the limit still fits, and `.ended` after it.
        let (stream, continuation) = AsyncStream.makeStream(
            of: SubscriptionEvent.self, bufferingPolicy: .bufferingOldest(max(1, self.configuration.maximumBufferedEvents) + 2))
        self.streams[channel] = continuation
        if let getToken { self.tokenSources[channel] = TokenSource(getToken: getToken) }
        if case .connected = self.state {
            self.sendSubscribe(channel)
        }
        return stream
    }

    func unsubscribe(_ channel: String) {
        guard self.subscriptions.remove(channel) else { return }
        self.streams.removeValue(forKey: channel)?.finishEnded(code: 0, reason: "unsubscribed")
        self.tokenSources.removeValue(forKey: channel)?.refresh?.cancel()
        self.subscribeTimers.removeValue(forKey: channel)?.cancel()
        if case .connected = self.state {
            if let poller = self.connection as? LongPollClientConnection {
                poller.restartPoll()  // the next poll leaves it out
                return
            }
            self.send(.unsubscribe(channel: channel), as: nil)
            self.connection?.flush()
        }
    }

    /// Sends `command` once connected; its result, or why there is none.
    func request(_ command: OutgoingCommand) -> EventLoopFuture<JSONObject> {
        if case .closed(let code, let reason) = self.state {
            return self.eventLoop.makeFailedFuture(ClientError.closed(code: code, reason: reason))
        }
        guard command.fits(self.configuration.maximumMessageSize) else {
            return self.eventLoop.makeFailedFuture(
                ClientError.invalidRequest(
                    "\(command.encodedSize) bytes, over maximumMessageSize (\(self.configuration.maximumMessageSize))"))
        }
        guard self.requests.count < self.configuration.maximumQueuedRequests else {
            return self.eventLoop.makeFailedFuture(ClientError.invalidRequest("too many requests waiting"))
        }
        let key = self.nextRequestKey
        self.nextRequestKey += 1
        let promise = self.eventLoop.makePromise(of: JSONObject.self)
        let timeout = self.eventLoop.assumeIsolated().scheduleTask(in: self.configuration.requestTimeout) {
            self.finishRequest(key, .failure(ClientError.timedOut))
        }
        self.requests[key] = PendingRequest(command: command, promise: promise, timeout: timeout)
        if case .connected = self.state {
            self.sendRequest(key)
            self.connection?.flush()
        } else {
            self.queue.append(key)
        }
        return promise.futureResult
    }

    // MARK: connections

    private func setState(_ state: ConnectionState) {
        self.state = state
        for (key, observer) in self.observers {
            if case .terminated = observer.yield(state) { self.observers[key] = nil }
        }
    }

    private func openConnection() {
        self.generation &+= 1
        let generation = self.generation
        self.setState(.connecting)
        self.serverDisconnect = nil
        self.connectDeadline?.cancel()
        self.connectDeadline = self.eventLoop.assumeIsolated().scheduleTask(in: self.configuration.connectTimeout) {
            guard self.generation == generation else { return }
            self.logger.debug("no connect reply in time")
            if let connection = self.connection {
                connection.close()
            } else {
                self.connectionClosed(code: nil, reason: "connect timed out", generation: generation)
            }
        }
        if let getToken = self.configuration.getToken {
            let loop = self.eventLoop
            let bound = NIOLoopBound(self, eventLoop: loop)
            Task {
                let token: Result<String, any Error>
                do {
                    token = .success(try await getToken())
                } catch {
                    token = .failure(error)
                }
                loop.execute {
                    let driver = bound.value
                    guard driver.generation == generation, case .connecting = driver.machine.state else { return }
                    switch token {
                    case .success(let token):
                        driver.dial(generation: generation, token: token)
                    case .failure(let error):
                        driver.connectionClosed(code: nil, reason: "getToken failed: \(error)", generation: generation)
                    }
                }
            }
        } else {
            self.dial(generation: generation, token: self.configuration.token)
        }
    }

    private func dial(generation: UInt64, token: String?) {
        let sslContext: NIOSSLContext?
        do {
            sslContext = try self.tlsContext()
        } catch {
            self.connectionClosed(code: nil, reason: "TLS configuration: \(error)", generation: generation)
            return
        }
        self.pendingToken = token
        switch self.machine.transport {
        case .webSocket:
            self.dialWebSocket(generation: generation, sslContext: sslContext)
        case .sse:
            self.dialEventStream(generation: generation, sslContext: sslContext)
        case .longPolling:
            self.dialLongPoll(generation: generation, sslContext: sslContext)
        }
    }

    /// The token of the attempt under way (kept until its `connect` is written).
    var pendingToken: String?

    func tlsContext() throws -> NIOSSLContext? {
        guard self.configuration.endpoint.usesTLS else { return nil }
        if let context = self.sslContext { return context }
        let context = try NIOSSLContext(configuration: self.configuration.tls)
        self.sslContext = context
        return context
    }

    /// The WebSocket handshake is done: send `connect` with every subscription and its position.
    func connectionOpened(_ channel: any Channel, generation: UInt64) {
        guard generation == self.generation, case .connecting = self.machine.state else {
            channel.close(promise: nil)
            return
        }
        self.machine.opened()
        let connection = WebSocketClientConnection(channel: channel)
        self.connection = connection
        self.lastReceived = .now()
        self.nextID = 1
        self.send(self.makeConnectCommand(), as: .connect)
        connection.flush()
    }

    /// `connect` with every subscription and its position, and the attempt's token (used once).
    func makeConnectCommand() -> OutgoingCommand {
        var connect = OutgoingCommand.connect(
            token: self.pendingToken, name: self.configuration.name, subs: self.subscriptions.startConnect())
        if case .connect(_, _, let subs) = connect, !subs.isEmpty, !connect.fits(self.configuration.maximumMessageSize) {
            // Too many channels for one message: they are subscribed one by one after the reply.
            self.subscriptions.connectionLost()
            connect = .connect(token: self.pendingToken, name: self.configuration.name, subs: [])
        }
        self.pendingToken = nil
        return connect
    }

    /// The connection (or the attempt) ended.
    func connectionClosed(code: UInt16?, reason: String, generation: UInt64) {
        guard generation == self.generation else { return }
        self.connection = nil
        self.cancelConnectionTimers()
        self.failInFlight()
        self.subscriptions.connectionLost()
        var code = code
        var reason = reason
        if code == nil, let disconnect = self.serverDisconnect {
            code = disconnect.code
            reason = disconnect.reason
        }
        let action = self.machine.lost(
            code: code, reason: reason, serverReconnect: self.serverDisconnect?.reconnect, random: Double.random(in: 0..<1))
        switch action {
        case .scheduleReconnect(let nanoseconds):
            self.logger.debug("connection lost", metadata: ["code": "\(code.map(String.init) ?? "none")", "reason": "\(reason)", "retryMs": "\(nanoseconds / 1_000_000)"])
            self.setState(.disconnected(code: code, reason: reason))
            self.reconnectTimer = self.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(nanoseconds)) {
                self.reconnectTimer = nil
                if case .openConnection = self.machine.timerFired() { self.openConnection() }
            }
        case .stop(let code, let reason):
            self.logger.debug("connection ended for good", metadata: ["code": "\(code)", "reason": "\(reason)"])
            self.stop(code: code, reason: reason)
        case .none:
            break
        }
    }

    /// The timers of one connection: its connect deadline, liveness check, token refreshes, and
    /// subscribe deadlines and retries.
    private func cancelConnectionTimers() {
        self.connectDeadline?.cancel()
        self.connectDeadline = nil
        self.livenessCheck?.cancel()
        self.livenessCheck = nil
        self.tokenRefresh?.cancel()
        self.tokenRefresh = nil
        self.climbBackProbe.end()
        self.climbBackProbe = .idle
        for channel in self.tokenSources.keys {
            self.tokenSources[channel]?.refresh?.cancel()
            self.tokenSources[channel]?.refresh = nil
        }
        for timer in self.subscribeTimers.values { timer.cancel() }
        self.subscribeTimers = [:]
    }

    /// The client is closed: nothing waits any more and every subscription ends.
    private func stop(code: UInt16?, reason: String) {
        self.generation &+= 1
        self.reconnectTimer?.cancel()
        self.reconnectTimer = nil
        self.cancelConnectionTimers()
        self.connection?.close()
        self.connection = nil
        self.failInFlight()
        let error = ClientError.closed(code: code, reason: reason)
        for key in self.queue { self.finishRequest(key, .failure(error)) }
        self.queue = []
        for waiter in self.connectedWaiters { waiter.fail(error) }
        self.connectedWaiters = []
        for channel in Array(self.subscriptions.channels) { self.subscriptions.remove(channel) }
        for stream in self.streams.values { stream.finishEnded(code: Int(code ?? 0), reason: reason) }
        self.streams = [:]
        self.tokenSources = [:]
        self.setState(.closed(code: code, reason: reason))
    }

    private func failInFlight() {
        let inFlight = self.inFlight
        self.inFlight = [:]
        for case .request(let key) in inFlight.values {
            self.finishRequest(key, .failure(ClientError.connectionLost))
        }
    }

    private func finishRequest(_ key: UInt64, _ result: Result<JSONObject, any Error>) {
        guard let request = self.requests.removeValue(forKey: key) else { return }
        request.timeout?.cancel()
        // Timed out (or ended) before its answer: the answer's entry goes too, or a node that drops
        // answers would grow `inFlight` by one per request for the connection's life.
        if let id = request.sentID, case .request(key) = self.inFlight[id] { self.inFlight[id] = nil }
        if let index = self.queue.firstIndex(of: key) { self.queue.remove(at: index) }
        request.promise.completeWith(result)
    }

    // MARK: sending

    /// Sends `command` with the next id; `kind` says what its answer is for, nil when nothing
    /// waits for it (an `unsubscribe`, a ping): such answers are not tracked, so a node that never
    /// sends them cannot grow `inFlight` (an entry per unanswered command, for the connection's life).
    @discardableResult
    private func send(_ command: OutgoingCommand, as kind: InFlight?) -> UInt64? {
        guard let connection = self.connection else { return nil }
        let id = self.nextID
        self.nextID = self.nextID >= UInt64(UInt32.max) ? 1 : self.nextID + 1
        var buffer = connection.allocator.buffer(capacity: 128)
        command.write(id: id, into: &buffer)
        if let kind { self.inFlight[id] = kind }
        connection.send(buffer)
        return id
    }

    private func sendRequest(_ key: UInt64) {
        guard let command = self.requests[key]?.command else { return }
        self.requests[key]?.sentID = self.send(command, as: .request(key))
    }

    private func sendSubscribe(_ channel: String) {
        if let poller = self.connection as? LongPollClientConnection {
            // Long-polling has no subscribe: the channel is in the next poll, with its token when it
            // needs one (left out of the polls until the token came).
            guard case .some = self.subscriptions.startSubscribe(channel) else { return }
            guard let source = self.tokenSources[channel], source.token == nil, let serial = self.subscriptions.entry(channel)?.serial
            else {
                poller.restartPoll()
                return
            }
            self.fetchSubscriptionToken(channel, serial: serial, from: source) { driver, token in
                driver.tokenSources[channel]?.token = token
                (driver.connection as? LongPollClientConnection)?.restartPoll()
            }
            return
        }
        guard case .some(let since) = self.subscriptions.startSubscribe(channel), let serial = self.subscriptions.entry(channel)?.serial
        else { return }
        guard let source = self.tokenSources[channel], source.token == nil else {
            self.sendSubscribeCommand(channel, since: since, token: self.tokenSources[channel]?.token, serial: serial)
            return
        }
        self.fetchSubscriptionToken(channel, serial: serial, from: source) { driver, token in
            driver.tokenSources[channel]?.token = token
            driver.sendSubscribeCommand(channel, since: since, token: token, serial: serial)
        }
    }

    /// Sends `subscribe`, whose answer is awaited for `requestTimeout` (the deadline of every
    /// request): a node that never answers must not leave the channel subscribing for good while
    /// its pings keep the connection up.
    private func sendSubscribeCommand(_ channel: String, since: StreamPosition?, token: String?, serial: UInt64) {
        guard let id = self.send(.subscribe(channel: channel, since: since, token: token), as: .subscribe(channel: channel, serial: serial))
        else { return }
        self.connection?.flush()
        self.subscriptions.subscribeSent(channel, id: id)
        let generation = self.generation
        self.setSubscribeTimer(channel, in: self.configuration.requestTimeout) {
            guard self.generation == generation else { return }
            self.subscribeTimedOut(channel, id: id)
        }
    }

    /// No answer to subscribe `id` of `channel` in time: it is given up and made again, on this
    /// connection, as after a temporary refusal: `unsubscribe` now (the node may hold the
    /// subscription and only the answer was lost, or still be making it, stuck on a history read;
    /// it answers that subscribe then, and the later replies it held back behind it come), then
    /// `subscribe` from the position after `retryDelay`, growing with each deadline missed in a row.
    /// The late answer, if it comes, finds no command waiting and is ignored; publications pushed
    /// meanwhile are not delivered (the channel is not live), the new subscribe's recovery brings them.
    ///
    /// Not a reconnect: the connection is alive (the liveness check, pings or `idlePingInterval`,
    /// ends a dead one), and what holds a subscribe back is one channel's trouble at the node (its
    /// join, a broker read). Reconnecting would end every other subscription (each one's recovery a
    /// history read, on a node or broker already struggling) and fail the requests in flight with
    /// `connectionLost` for one channel's sake.
    private func subscribeTimedOut(_ channel: String, id: UInt64) {
        guard case .retry(let retries) = self.subscriptions.subscribeTimedOut(channel, id: id) else { return }
        self.logger.warning(
            "no answer to a subscribe in time; unsubscribing and subscribing again",
            metadata: ["channel": "\(channel)", "retries": "\(retries)"])
        self.inFlight[id] = nil
        self.send(.unsubscribe(channel: channel), as: nil)
        self.connection?.flush()
        self.subscribeAgain(channel, retries: retries, pausingPolls: false)
    }

    /// Runs `task` in `delay` as `channel`'s one subscribe timer (replacing, and cancelling, the one
    /// it had). A timer that fired stays in the table until replaced or cancelled (a no-op then).
    private func setSubscribeTimer(_ channel: String, in delay: TimeAmount, _ task: @escaping () -> Void) {
        self.subscribeTimers[channel]?.cancel()
        self.subscribeTimers[channel] = self.eventLoop.assumeIsolated().scheduleTask(in: delay, task)
    }

    /// Asks `source` for a token for `channel` and, if the subscription is still the same on the
    /// same connection when it comes, hands it to `use`; a failed or empty answer is asked again
    /// after a second.
    private func fetchSubscriptionToken(
        _ channel: String, serial: UInt64, from source: TokenSource, use: @escaping (ClientDriver, String) -> Void
    ) {
        let generation = self.generation
        let loop = self.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        let getToken = source.getToken
        let useBound = NIOLoopBound(use, eventLoop: loop)
        Task {
            let token = try? await getToken(channel)
            loop.execute {
                let driver = bound.value
                guard driver.generation == generation, case .connected = driver.state,
                    driver.subscriptions.entry(channel)?.serial == serial
                else { return }
                guard let token, !token.isEmpty else {
                    driver.logger.debug("no subscription token; asking again in 1 s", metadata: ["channel": "\(channel)"])
                    _ = driver.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) {
                        guard driver.generation == generation, driver.subscriptions.entry(channel)?.serial == serial,
                            let source = driver.tokenSources[channel]
                        else { return }
                        driver.fetchSubscriptionToken(channel, serial: serial, from: source, use: useBound.value)
                    }
                    return
                }
                useBound.value(driver, token)
            }
        }
    }

    // MARK: receiving

    func received(_ frame: ByteBuffer, generation: UInt64) {
        guard generation == self.generation else { return }
        self.lastReceived = .now()
        let messages: [ServerMessage]
        do {
            messages = try ServerMessage.decode(frame: frame.readableBytesView)
        } catch {
            self.logger.warning("node sent invalid JSON; reconnecting", metadata: ["error": "\(error)"])
            self.connection?.close()
            return
        }
        for message in messages {
            guard generation == self.generation else { return }  // a message can end the connection
            self.handle(message)
        }
        self.connection?.flush()
    }

    func handle(_ message: ServerMessage) {
        switch message {
        case .result(let id, let result):
            self.answer(id, .success(result))
        case .error(let id, let error):
            self.answer(id, .failure(error))
        case .publication(let channel, let publication):
            switch self.subscriptions.publication(channel, publication) {
            case .deliver:
                self.publicationsDelivered &+= 1
                self.deliver(.publication(publication), to: channel)
            case .duplicate:
                self.logger.trace("duplicate dropped", metadata: ["channel": "\(channel)", "offset": "\(publication.offset ?? 0)"])
            case .ignore:
                break
            case .resubscribe(let since):
                self.logger.warning(
                    "hole in a channel's offsets: not delivered past it; subscribing again from the last one delivered",
                    metadata: ["channel": "\(channel)", "after": "\(since.offset)", "got": "\(publication.offset ?? 0)"])
                self.subscribeAgainAfterHole(channel)
            case .deliverAfterLoss(let position):
                self.logger.warning(
                    "hole in a channel's offsets that its history no longer holds: delivered as unrecovered",
                    metadata: ["channel": "\(channel)", "got": "\(publication.offset ?? 0)"])
                self.publicationsDelivered &+= 1
                self.deliver(.unrecovered(position: position), to: channel)
                self.deliver(.publication(publication), to: channel)
            }
        case .join(let channel, let info):
            if self.subscriptions.entry(channel)?.phase == .live { self.deliver(.join(info), to: channel) }
        case .leave(let channel, let info):
            if self.subscriptions.entry(channel)?.phase == .live { self.deliver(.leave(info), to: channel) }
        case .unsubscribed(let channel, let code, let reason):
            switch self.subscriptions.unsubscribed(channel, code: code, now: .now()) {
            case .resubscribe:
                if code == 2501 { self.tokenSources[channel]?.token = nil }  // expired: ask for a new one
                self.sendSubscribe(channel)
            case .resubscribeLater(let retries):
                // Removed again with nothing delivered since: a node that cannot settle the channel
                // is not asked in a loop (each subscribe a history read for it).
                self.logger.debug("subscription removed again; subscribing after a delay", metadata: ["channel": "\(channel)", "code": "\(code)"])
                if code == 2501 { self.tokenSources[channel]?.token = nil }
                self.subscribeAgain(channel, retries: retries, pausingPolls: self.connection is LongPollClientConnection)
            case .ended:
                self.streams.removeValue(forKey: channel)?.finishEnded(code: code, reason: reason)
                self.tokenSources.removeValue(forKey: channel)?.refresh?.cancel()
                self.subscribeTimers.removeValue(forKey: channel)?.cancel()
            case .ignore:
                break
            }
        case .disconnect(let code, let reason, let reconnect):
            self.serverDisconnect = (code, reason, reconnect)
        case .ping:
            if self.expectsPong, let connection = self.connection {
                var pong = connection.allocator.buffer(capacity: 2)
                pong.writeStaticString("{}")
                connection.send(pong)
            }
        case .unknown:
            break
        }
    }

    private func answer(_ id: UInt64, _ result: Result<JSONObject, SwitchboardError>) {
        guard let kind = self.inFlight.removeValue(forKey: id) else { return }
        switch kind {
        case .connect:
            switch result {
            case .success(let object):
                self.connectReplied(object)
            case .failure(let error):
                // The node closes the connection after a refused connect (3500, 3503): its close
                // code decides whether to come back.
                self.logger.debug("connect refused", metadata: ["error": "\(error)"])
                if error.code.rawValue == SwitchboardError.Code.tokenExpired.rawValue {
                    // Closed here, before the node's own 3503 can be read: the close is taken as that
                    // 3503 (without `getToken`, the same token would be refused on every reconnect).
                    if self.serverDisconnect == nil {
                        self.serverDisconnect = (DisconnectCode.tokenExpired.rawValue, DisconnectCode.tokenExpired.reason, false)
                    }
                    self.connection?.close()
                }
            }
        case .subscribe(let channel, let serial):
            guard self.subscriptions.entry(channel)?.serial == serial, self.subscriptions.subscribeAnswered(channel, id: id) else { return }
            self.subscribeTimers.removeValue(forKey: channel)?.cancel()
            switch result {
            case .success(let object):
                self.subscribed(channel, object)
            case .failure(let error):
                self.subscriptionRefused(channel, error)
            }
        case .refresh:
            switch result {
            case .success(let object):
                if object["expires"]?.boolValue == true, let ttl = object["ttl"]?.intValue { self.scheduleTokenRefresh(ttl: ttl) }
            case .failure(let error):
                // The old token holds until its expiry and the node's grace period; try again soon.
                self.logger.debug("token refresh refused", metadata: ["error": "\(error)"])
                if error.code.isTemporary { self.scheduleTokenRefresh(ttl: 2) }
            }
        case .subRefresh(let channel, let serial):
            guard self.subscriptions.entry(channel)?.serial == serial else { return }
            if case .success(let object) = result, object["expires"]?.boolValue == true, let ttl = object["ttl"]?.intValue {
                self.scheduleSubscriptionTokenRefresh(channel, ttl: ttl)
            }
        case .request(let key):
            self.finishRequest(key, result.mapError { ClientError.server($0) as any Error })
        }
    }

    private func connectReplied(_ object: JSONObject) {
        guard self.machine.connected() else { return }
        self.connectDeadline?.cancel()
        self.connectDeadline = nil
        let generation = self.generation
        _ = self.eventLoop.assumeIsolated().scheduleTask(in: Self.stableAfter) {
            if self.generation == generation { self.machine.stable() }
        }
        let result = ConnectResult(json: object, transport: self.machine.transport)
        self.connection?.connectReplied(session: object["session"]?.stringValue)
        self.scheduleClimbBackProbe()
        self.expectsPong = result.pong
        self.startLivenessCheck(pingInterval: result.pingInterval)
        if let ttl = result.tokenTTL { self.scheduleTokenRefresh(ttl: ttl) }
        self.setState(.connected(result))
        for waiter in self.connectedWaiters { waiter.succeed(result) }
        self.connectedWaiters = []
        // One pass over the answer (a linear lookup per channel would be quadratic in what the node sends).
        var subs: [String: JSONValue] = [:]
        for member in object["subs"]?.objectValue?.members ?? [] {
            if self.subscriptions.entry(member.key)?.phase == .subscribing {
                subs[member.key] = member.value
            } else if member.value.objectValue?["error"] == nil {
                // Unsubscribed while the connect was out (or unsubscribed and followed again): the
                // node subscribed it with the connect; it goes (before any new subscribe of it).
                self.send(.unsubscribe(channel: member.key), as: nil)
            }
        }
        for channel in Array(self.subscriptions.channels) where self.subscriptions.entry(channel)?.phase == .subscribing {
            guard let answer = subs[channel]?.objectValue else {
                // Not in the answer: subscribed after the connect went out.
                self.sendSubscribe(channel)
                continue
            }
            if let error = answer["error"]?.objectValue {
                self.subscriptionRefused(channel, ServerMessage.error(error))
            } else {
                self.subscribed(channel, answer)
            }
        }
        for channel in Array(self.subscriptions.channels) where self.subscriptions.entry(channel)?.phase == .waiting {
            self.sendSubscribe(channel)
        }
        let queue = self.queue
        self.queue = []
        for key in queue { self.sendRequest(key) }
    }

    private func subscribed(_ channel: String, _ object: JSONObject) {
        for event in self.subscriptions.subscribed(channel, SubscribeResult(json: object)) {
            self.deliver(event, to: channel)
        }
        if object["expires"]?.boolValue == true, let ttl = object["ttl"]?.intValue {
            self.scheduleSubscriptionTokenRefresh(channel, ttl: ttl)
        }
    }

    /// A new subscription token goes to the node (`subRefresh`) at four fifths of `ttl` seconds;
    /// one not refreshed in time gets the subscription removed with 2501, and then the client
    /// subscribes again from its position with a new token.
    private func scheduleSubscriptionTokenRefresh(_ channel: String, ttl: Int) {
        guard let serial = self.subscriptions.entry(channel)?.serial, self.tokenSources[channel] != nil else { return }
        self.tokenSources[channel]?.refresh?.cancel()
        let generation = self.generation
        self.tokenSources[channel]?.refresh = self.eventLoop.assumeIsolated().scheduleTask(in: Self.refreshDelay(ttl: ttl)) {
            guard self.generation == generation, let source = self.tokenSources[channel] else { return }
            self.fetchSubscriptionToken(channel, serial: serial, from: source) { driver, token in
                driver.tokenSources[channel]?.token = token
                driver.send(.subRefresh(channel: channel, token: token), as: .subRefresh(channel: channel, serial: serial))
                driver.connection?.flush()
            }
        }
    }

    /// Four fifths of a token's `ttl` seconds (at least half a second, at most a year).
    /// How long a connection must live before the reconnect backoff starts over.
    static let stableAfter = TimeAmount.seconds(5)

    static func refreshDelay(ttl: Int) -> TimeAmount {
        .milliseconds(Int64(max(500, min(max(ttl, 0), 86_400 * 365) * 800)))  // `ttl` is the node's: clamped before any arithmetic
    }

    /// Whether `channel` needs a subscription token, and the one it holds: a long-poll carries
    /// the token in the channel's entry, and leaves out a channel whose token is still being fetched.
    enum SubscriptionTokenState: Equatable {
        case notNeeded
        case awaited
        case held(String)
    }

    func subscriptionToken(_ channel: String) -> SubscriptionTokenState {
        guard let source = self.tokenSources[channel] else { return .notNeeded }
        return source.token.map { .held($0) } ?? .awaited
    }

    /// Makes `channel`'s subscription again from its position after a hole (the table made it
    /// `subscribing`): over a connection, `unsubscribe` then `subscribe` with `since` (the node still
    /// has it, and would refuse a second with 105; answers come in order); over long-polling, the
    /// next poll, at once, asks from the position.
    private func subscribeAgainAfterHole(_ channel: String) {
        if let poller = self.connection as? LongPollClientConnection {
            self.pollSkipping.insert(channel)
            poller.restartPoll()
            return
        }
        self.send(.unsubscribe(channel: channel), as: nil)
        self.sendSubscribe(channel)
    }

    func subscriptionRefused(_ channel: String, _ error: SwitchboardError) {
        let polling = self.connection is LongPollClientConnection
        // Over a connection, a refusal answers a subscribe: one for an attempt that is over (the
        // channel is live again) changes nothing. (A poll's refusal is about the channel as polled.)
        guard let entry = self.subscriptions.entry(channel), polling || entry.phase != .live else { return }
        if error.code.rawValue == SwitchboardError.Code.tokenExpired.rawValue, self.tokenSources[channel] != nil {
            // The token expired: a new one, after a second (a getToken that keeps giving expired
            // tokens must not make a loop of subscribes or polls), then on from the same position.
            self.tokenSources[channel]?.token = nil
            self.subscribeAgainLater(channel, pausingPolls: polling)
            return
        }
        if error.code.isTemporary {
            // Tried again later on this connection (a history read that failed in a broker blip,
            // a command rate refusal), with a growing delay; over long-polling, left out of the
            // polls until then (the next poll would ask at once).
            self.logger.debug("subscribe failed, temporary", metadata: ["channel": "\(channel)", "error": "\(error)"])
            self.subscribeAgainLater(channel, pausingPolls: polling)
            return
        }
        self.subscriptions.remove(channel)
        self.streams.removeValue(forKey: channel)?.finishEnded(code: error.code.rawValue, reason: error.message)
        self.tokenSources.removeValue(forKey: channel)?.refresh?.cancel()
        self.subscribeTimers.removeValue(forKey: channel)?.cancel()
    }

    /// One more refusal in a row: subscribes `channel` again after `retryDelay`.
    private func subscribeAgainLater(_ channel: String, pausingPolls: Bool) {
        self.subscribeAgain(channel, retries: self.subscriptions.countRetry(channel), pausingPolls: pausingPolls)
    }

    /// Subscribes `channel` again after `retryDelay(retries:)`, if it is still the same subscription
    /// on the same connection; over long-polling it is left out of the polls until then.
    private func subscribeAgain(_ channel: String, retries: Int, pausingPolls: Bool) {
        guard let serial = self.subscriptions.entry(channel)?.serial else { return }
        if pausingPolls { self.subscriptions.pause(channel) }
        let generation = self.generation
        self.setSubscribeTimer(channel, in: Self.retryDelay(retries: retries, random: Double.random(in: 0...1))) {
            guard self.generation == generation, self.subscriptions.entry(channel)?.serial == serial else { return }
            self.sendSubscribe(channel)
        }
    }

    /// A second, doubled with each retry in a row up to 30 s, from half to one and a half times
    /// that (jitter: channels refused together do not come back together).
    static func retryDelay(retries: Int, random: Double) -> TimeAmount {
        let base = Double(min(30, 1 << min(max(retries - 1, 0), 5)))
        return .milliseconds(Int64(base * (0.5 + min(max(random, 0), 1)) * 1000))
    }

    /// With `getToken`, a new connection token goes to the node (`refresh`) when four fifths of
    /// `ttl` seconds have passed, so the connection outlives its token; without it, the node closes
    /// the connection at expiry (3503) and the client stops.
    private func scheduleTokenRefresh(ttl: Int) {
        self.tokenRefresh?.cancel()
        guard let getToken = self.configuration.getToken else { return }
        let generation = self.generation
        self.tokenRefresh = self.eventLoop.assumeIsolated().scheduleTask(in: Self.refreshDelay(ttl: ttl)) {
            let loop = self.eventLoop
            let bound = NIOLoopBound(self, eventLoop: loop)
            Task {
                let token = try? await getToken()
                loop.execute {
                    let driver = bound.value
                    guard driver.generation == generation, case .connected = driver.state else { return }
                    guard let token, !token.isEmpty else {
                        driver.logger.debug("getToken failed for a refresh; trying again in 1 s")
                        driver.scheduleTokenRefresh(ttl: 1)
                        return
                    }
                    driver.send(.refresh(token: token), as: .refresh)
                    driver.connection?.flush()
                }
            }
        }
    }

    /// The node pings every `pingInterval` seconds when it has sent nothing else: a connection
    /// silent for that long plus `silenceGrace` is dead, whatever TCP says.
    private func startLivenessCheck(pingInterval: Double) {
        self.livenessCheck?.cancel()
        let grace = max(self.configuration.silenceGrace, .zero)
        if pingInterval > 0, pingInterval.isFinite {
            let limit = TimeAmount.nanoseconds(Int64(min(pingInterval, 3600) * 1e9)) + grace
            return self.scheduleLivenessCheck(limit: limit, pingAfter: nil, generation: self.generation)
        }
        // No pings from the node: the client asks itself, where a ping command has a connection to
        // answer on (a long-poll is answered at its own timeout, which may be longer).
        let idle = self.configuration.idlePingInterval
        guard idle > .zero, !(self.connection is LongPollClientConnection) else { return }
        self.scheduleLivenessCheck(limit: idle + grace, pingAfter: idle, generation: self.generation)
    }

    /// Checked four times per `limit`, at most every second, at least every 50 ms.
    static func livenessCheckInterval(_ limit: TimeAmount) -> TimeAmount {
        .nanoseconds(min(max(limit.nanoseconds / 4, 50_000_000), 1_000_000_000))
    }

    /// - Parameter pingAfter: when the client pings (the node does not): after this long without
    ///   hearing from the node, one `ping` command per silence.
    private func scheduleLivenessCheck(limit: TimeAmount, pingAfter: TimeAmount?, generation: UInt64) {
        self.livenessCheck = self.eventLoop.assumeIsolated().scheduleTask(in: Self.livenessCheckInterval(limit)) {
            guard self.generation == generation else { return }
            let now = NIODeadline.now()
            if now - self.lastReceived > limit {
                self.logger.debug("nothing from the node for too long; reconnecting")
                self.connection?.close()
                return
            }
            if let pingAfter, now - self.lastReceived > pingAfter, self.lastClientPing < self.lastReceived {
                self.lastClientPing = now
                self.send(.ping, as: nil)
                self.connection?.flush()
            }
            self.scheduleLivenessCheck(limit: limit, pingAfter: pingAfter, generation: generation)
        }
    }
}

@available(*, unavailable)
extension ClientDriver: Sendable {}

extension ClientDriver {
    /// Hands `event` to the subscription's reader. When the reader has left more than
    /// `maximumBufferedEvents` unread, the subscription ends there (unsubscribed from the node) rather
    /// than holding without bound what a stalled reader leaves.
    func deliver(_ event: SubscriptionEvent, to channel: String) {
        guard let stream = self.streams[channel] else { return }
        switch stream.yield(event) {
        case .enqueued(let remaining) where remaining > 1:
            return
        case .terminated:
            return
        case .enqueued, .dropped:
            self.logger.warning("subscription ended: events not read", metadata: ["channel": "\(channel)"])
            // The reader's sequence ends now (later events of the channel find no stream); the node is
            // told on the next turn of the loop, not from inside the message or poll being handled.
            self.streams.removeValue(forKey: channel)?.finishEnded(
                code: ClientSubscription.unreadEventsCode, reason: "more than \(self.configuration.maximumBufferedEvents) events not read")
            self.eventLoop.assumeIsolated().execute { self.unsubscribe(channel) }
        @unknown default:
            return
        }
    }
}

extension AsyncStream<SubscriptionEvent>.Continuation {
    func finishEnded(code: Int, reason: String) {
        self.yield(.ended(code: code, reason: reason))
        self.finish()
    }
}
