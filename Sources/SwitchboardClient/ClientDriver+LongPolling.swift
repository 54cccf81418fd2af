import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import SwitchboardCore

/// Long-polling: the connection (`LongPollClientConnection`) asks the driver what to poll for and
/// hands it what came back; subscriptions are made by polling from positions, not by commands.
extension ClientDriver {
    /// Opens a long-polling connection: its handshake's answer is the connect reply (id 1), and
    /// its subscriptions are made by polling (`pollRequest`), not by `connect` or `subscribe`.
    func dialLongPoll(generation: UInt64, sslContext: NIOSSLContext?) {
        let connection = LongPollClientConnection(
            driver: self, generation: generation, endpoint: self.configuration.endpoint, sslContext: sslContext,
            eventLoop: self.eventLoop, token: self.pendingToken, requestTimeout: self.configuration.requestTimeout,
            maximumBodySize: self.configuration.maximumMessageSize, maximumAnswerSize: self.configuration.maximumIncomingMessageSize)
        self.pendingToken = nil
        self.connection = connection
        self.lastReceived = .now()
        self.inFlight[1] = .connect
        self.nextID = 2
        connection.open(timeout: self.configuration.connectTimeout)
    }

    /// What the next long-poll asks for.
    struct PollRequest {
        var body: ByteBuffer
        /// Channels polled for the first time (no position yet): the poll asks with `timeout: 0`.
        var probe: [String]
        var timeoutSeconds: Int
    }

    /// The body of the next poll: every channel followed and its position. A channel polled from a
    /// position counts as subscribed (recovered) from now on; a `position` answer with
    /// `recovered: false` says otherwise. Nil when nothing is followed (no poll until one is).
    func pollRequest(generation: UInt64) -> PollRequest? {
        guard generation == self.generation, case .connected = self.state else { return nil }
        var probe: [String] = []
        var subs: [(channel: String, since: StreamPosition?, token: String?)] = []
        for channel in self.subscriptions.channels.sorted() {
            guard let entry = self.subscriptions.entry(channel) else { continue }
            let token: String?
            switch self.subscriptionToken(channel) {
            case .notNeeded: token = nil
            case .awaited: continue  // polled once its token came
            case .held(let held): token = held
            }
            if entry.phase == .subscribing {
                if let position = entry.position {
                    for event in self.subscriptions.subscribed(
                        channel, SubscribeResult(position: position, recoverable: true, recovered: true), settled: false)
                    {
                        self.deliver(event, to: channel)
                    }
                } else {
                    probe.append(channel)
                }
            }
            if self.subscriptions.entry(channel)?.phase != .waiting { subs.append((channel, entry.position, token)) }
        }
        guard !subs.isEmpty else { return nil }
        let seconds = probe.isEmpty ? Int(min(max(self.configuration.pollTimeout.nanoseconds / 1_000_000_000, 0), 60)) : 0
        var body = ByteBuffer()
        body.writeJSONObject { object in
            object.object("subs") { channels in
                for sub in subs {
                    channels.object(sub.channel) { entry in
                        OutgoingCommand.writePosition(sub.since, into: &entry)
                        if let token = sub.token { entry.field("token", string: token) }
                    }
                }
            }
            object.field("timeout", int: seconds)
            object.field("client", string: self.pollClientID)
        }
        return PollRequest(body: body, probe: probe, timeoutSeconds: seconds)
    }

    /// What a poll's answer did: whether anything moved (a publication delivered, a position, a
    /// channel refused or ended). A quick answer that moved nothing is not polled again at once,
    /// however many items it held: a node (or proxy) answering nonsense must not make a poll loop.
    struct PollOutcome {
        var moved: Bool
    }

    /// A poll's answer: publications, positions and refusals per channel, and what a push would
    /// carry (`unsubscribe`, `disconnect`). Nil when it is not a JSON array.
    func pollAnswered(_ body: ByteBuffer, probe: [String], generation: UInt64) -> PollOutcome? {
        guard generation == self.generation else { return PollOutcome(moved: false) }
        guard case .array(let items) = try? ServerMessage.arrayParser.parse(body.readableBytesView) else { return nil }
        self.lastReceived = .now()
        let before = (self.subscriptions.entries, self.publicationsDelivered)
        var moved: Bool { self.subscriptions.entries != before.0 || self.publicationsDelivered != before.1 }
        self.pollSkipping = []
        defer { self.pollSkipping = [] }
        for item in items {
            guard generation == self.generation else { return PollOutcome(moved: moved) }  // an item can end the connection
            if let channel = item.objectValue?["channel"]?.stringValue, self.pollSkipping.contains(channel) {
                continue  // past a hole in this answer: the next poll asks again from the position
            }
            guard case .object(let object) = item, let channel = object["channel"]?.stringValue else {
                let message = ServerMessage(json: item)
                self.handle(message)
                if case .disconnect = message {
                    self.connection?.close()  // with the disconnect's code
                    return PollOutcome(moved: moved)
                }
                continue
            }
            if let position = object["position"]?.objectValue {
                self.polledPosition(channel, position)
            } else if let error = object["error"]?.objectValue {
                if self.subscriptions.entry(channel) != nil { self.subscriptionRefused(channel, ServerMessage.error(error)) }
            } else {
                self.handle(ServerMessage(json: item))
            }
        }
        // A first poll that brought no position: the channel keeps no history; it is followed as is.
        for channel in probe where self.subscriptions.entry(channel)?.phase == .subscribing && self.subscriptions.entry(channel)?.position == nil {
            for event in self.subscriptions.subscribed(channel, SubscribeResult(position: nil, recoverable: false)) {
                self.deliver(event, to: channel)
            }
        }
        return PollOutcome(moved: moved)
    }

    func polledPosition(_ channel: String, _ object: JSONObject) {
        guard let entry = self.subscriptions.entry(channel) else { return }
        var position: StreamPosition?
        if let offset = object["offset"]?.uint64Value, let epoch = object["epoch"]?.stringValue {
            position = StreamPosition(offset: offset, epoch: epoch)
        }
        let events: [SubscriptionEvent]
        switch entry.phase {
        case .subscribing:
            events = self.subscriptions.subscribed(channel, SubscribeResult(position: position, recoverable: position != nil))
        case .live where object["recovered"]?.boolValue == false:
            events = self.subscriptions.unrecovered(channel, position: position)
        case .live, .waiting:
            events = []
        }
        // The node answered for the channel: refusals in a row are over.
        self.subscriptions.clearRetries(channel)
        for event in events { self.deliver(event, to: channel) }
    }

    /// The replies of one `/rpc` request, in command order.
    func rpcAnswered(_ body: ByteBuffer, generation: UInt64) {
        guard generation == self.generation else { return }
        guard case .array(let replies) = try? ServerMessage.arrayParser.parse(body.readableBytesView) else {
            self.logger.warning("node sent an rpc answer that is not a JSON array; reconnecting")
            self.connection?.close()
            return
        }
        self.lastReceived = .now()
        for reply in replies {
            guard generation == self.generation else { return }
            self.handle(ServerMessage(json: reply))
        }
        self.connection?.flush()
    }
}
