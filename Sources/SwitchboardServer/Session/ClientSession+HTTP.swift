import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardBroker
import SwitchboardCore

/// The session as SSE, long-poll and `/rpc` use it: connect implied by the request, commands that
/// arrive by HTTP body, objects gathered for one answer, and the SSE resume id.
extension ClientSession {

    /// Runs the `connect` an SSE stream or a poll implies (command id 1).
    func start(_ params: ConnectParams) {
        guard case .awaitingConnect = self.state else { return }
        self.authenticateConnect(id: 1, params)
        self.flush()
    }

    /// Whether `secret` names this SSE session (compared in constant time).
    func matchesSession(secret: String) -> Bool {
        guard self.isConnected, let eventStream = self.output as? EventStreamOutput else { return false }
        return eventStream.matches(secret: secret)
    }

    /// Reads the commands of an HTTP body (SSE POST, `/rpc`): one or more JSON objects, one per line.
    /// Every one is checked before any runs, so a bad body is refused whole and costs nothing.
    static func parseCommands(_ body: ByteBuffer, allowConnect: Bool, maximumCommands: Int) -> Result<[ClientMessage], HTTPCommandError> {
        let values: [JSONValue]
        do {
            values = try Self.parser.parseSequence(body.readableBytesView)
        } catch {
            return .failure(HTTPCommandError(message: "malformed JSON: \(error.message)"))
        }
        guard !values.isEmpty else { return .failure(HTTPCommandError(message: "no commands in the body")) }
        guard values.count <= maximumCommands else {
            return .failure(HTTPCommandError(message: "at most \(maximumCommands) commands per request", tooMany: true))
        }
        var messages: [ClientMessage] = []
        messages.reserveCapacity(values.count)
        for value in values {
            do {
                let message = try ClientMessage.parse(value)
                if !allowConnect, case .command(let command) = message, case .connect = command.method {
                    return .failure(HTTPCommandError(message: "the stream is connected already; connect is not a POST command"))
                }
                messages.append(message)
            } catch {
                return .failure(HTTPCommandError(message: "bad request: \(error.message)"))
            }
        }
        return .success(messages)
    }

    /// Commands that arrived by HTTP (SSE POST), checked and run.
    func receiveCommands(_ body: ByteBuffer) -> SessionCommandOutcome {
        guard self.isConnected else { return .rejected(status: 404, message: "unknown session") }
        switch Self.parseCommands(body, allowConnect: false, maximumCommands: self.node.configuration.maxCommandsPerRequest) {
        case .failure(let error):
            return .rejected(status: error.tooMany ? 413 : 400, message: error.message)
        case .success(let messages):
            self.run(messages)
            return .accepted(messages.count)
        }
    }

    /// Runs commands that were checked already (by `parseCommands`).
    func run(_ messages: [ClientMessage]) {
        // Replies may complete while later commands are still being read (a broker on this
        // loop answers at once): an `/rpc` answer waits until every command has its slot.
        self.receivingCommands = true
        for message in messages {
            guard self.isConnected else { break }
            self.handle(message)
        }
        self.receivingCommands = false
        self.flush()
        if let collector = self.collector {
            collector.isReady = true
            self.finishCollectingIfDue()
        }
    }

    /// The poll's time is up: answer with what there is, or, while the subscriptions are still
    /// being made, as soon as they are (so even a zero timeout gets the positions).
    func collectTimedOut() {
        guard let collector = self.collector else { return }
        collector.timedOut = true
        self.finishCollectingIfDue()
    }

    /// Sends a collecting session's answer now and ends the session.
    func finishCollecting() {
        guard let collector = self.collector else { return }
        collector.complete()
        self.close()
    }

    /// Ends a collecting session without an answer (its HTTP connection went away).
    func abandon() {
        self.collector?.abandon()
        self.close()
    }

    /// Answers a collecting session's request once it has what the request needs.
    func finishCollectingIfDue() {
        guard let collector = self.collector, collector.isReady, !collector.isCompleted, !self.receivingCommands else { return }
        switch collector.purpose {
        case .poll:
            if !collector.objects.isEmpty || collector.timedOut { self.finishCollecting() }
        case .rpc:
            if (self.repliesAreDone && self.connectPending == nil) || collector.timedOut { self.finishCollecting() }
        }
    }

    /// A poll's connect result as poll objects: missed publications, or the position to go on from.
    func collectConnectResults(_ aggregate: ConnectAggregate, into collector: CollectOutput) {
        // A recovery read short (`truncated`) ends the answer's publications: what comes live after
        // it would follow a hole.
        defer { if aggregate.results.contains(where: { (try? $0.outcome.get())?.truncated == true }) { collector.stopTaking() } }
        for result in aggregate.results {
            var object = self.allocator.buffer(capacity: 128)
            switch result.outcome {
            case .success(let activation):
                var position = activation.position
                var recovered = activation.recovered
                if activation.recovered == true {
                    // As many as fit in the answer; then the position of the last one that did,
                    // so the client's next poll goes on from there and nothing is lost.
                    var delivered: UInt64?
                    for publication in activation.publications {
                        var pub = self.allocator.buffer(capacity: 64 + publication.data.readableBytes)
                        pub.writePublicationPush(channel: result.channel, publication)
                        if delivered == nil, !collector.fitsAnyAnswer(pub.readableBytes) {
                            // Next in line and larger than any answer (its data within the read's
                            // bound, its publisher's `info` not): it can never be delivered, so it is
                            // lost, and said so, rather than asked for again by every poll. The
                            // position is its own: the next poll goes on with the ones after it.
                            recovered = false
                            if let epoch = position?.epoch { position = StreamPosition(offset: publication.offset, epoch: epoch) }
                            break
                        }
                        guard collector.append(pub) else { break }
                        delivered = publication.offset
                    }
                    if recovered == true {
                        if delivered == activation.publications.last?.offset { continue }
                        if let delivered, let epoch = position?.epoch {
                            position = StreamPosition(offset: delivered, epoch: epoch)
                        } else if let since = self.subscriptions[result.channel]?.requestedSince {
                            position = since
                        }
                    }
                }
                guard let position else { continue }  // no history: nothing to carry
                object.writeJSONObject { item in
                    item.field("channel", string: result.channel)
                    item.object("position") { fields in
                        ResultWriter.positionFields(&fields, position)
                        if recovered == false { fields.field("recovered", bool: false) }
                    }
                }
            case .failure(let error):
                object.writeJSONObject { item in
                    item.field("channel", string: result.channel)
                    item.object("error") { ResultWriter.errorFields(&$0, error) }
                }
            }
            collector.appendPosition(object)
        }
    }

    /// A poll that named its poller lists it in the presence of every channel it may follow (where
    /// the namespace keeps presence) until its wait and a grace are over: the next poll refreshes
    /// the entry, a poller that stops polling drops out. No join or leave is announced for it (a
    /// poll is a moment; the entry outlives it). A loop writes an entry again only once half its time
    /// is used up (`PollPresenceThrottle`): a poller answered at once by a busy channel polls often.
    /// The entry's id is `lp-` and a hash of the user and
    /// the poller's `client`, so one client cannot write over another user's entry.
    func enterPollPresence(_ aggregate: ConnectAggregate, _ clientInfo: ClientInfo, _ collector: CollectOutput) {
        guard let presence = collector.pollPresence else { return }
        let info = ClientInfo(
            client: Self.pollPresenceID(user: clientInfo.user, client: presence.client), user: clientInfo.user,
            info: clientInfo.info, meta: clientInfo.meta)
        let now = NIODeadline.now()
        let ttl = TimeAmount.milliseconds(Int64(presence.ttl * 1000))
        // An address lists a bounded number of pollers, 4 x maxPollsPerIP on the node (each loop
        // its share): a stream of polls each naming a new `client` must not fill a channel's
        // presence with made-up entries. The polls are still answered.
        let pollersPerAddress = max(1, self.node.configuration.maxPollsPerIP * 4 / max(1, self.node.fanouts.count))
        guard self.fanout.pollPresence.admitsPoller(info.client, address: presence.address, most: pollersPerAddress, ttl: ttl, now: now) else {
            self.node.logger.debug("poller not listed in presence: its address lists enough", metadata: ["address": "\(presence.address)"])
            return
        }
        for result in aggregate.results {
            guard case .success = result.outcome, self.node.configuration.namespaces.options(for: result.channel).presence,
                self.fanout.pollPresence.shouldWrite(channel: result.channel, poller: info.client, ttl: ttl, now: now)
            else { continue }
            _ = self.node.broker.addPresence(channel: result.channel, clients: [info], ttl: presence.ttl)
        }
    }

    /// `lp-` and the first 16 hex digits of SHA-256(user, NUL, client).
    static func pollPresenceID(user: String, client: String) -> String {
        var bytes = Array(user.utf8)
        bytes.append(0)
        bytes += client.utf8
        let digest = SHA256.hash(data: bytes)
        return "lp-" + digest.prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    /// Every subscription's position as far as the client was sent it, in no particular order
    /// (the id is read as a JSON object; sorting 128 long names for every event cost more than
    /// the rest of it): what an SSE resume id holds (`ResumeID`). A subscription whose reply is not written yet reports where
    /// the client asked to resume from: its position may be ahead, and a stream cut before the reply
    /// would otherwise resume past publications the client never got.
    var positions: [(channel: String, position: StreamPosition?)] {
        var subs: [(channel: String, position: StreamPosition?)] = []
        subs.reserveCapacity(self.subscriptions.count)
        for subscription in self.subscriptions.values {
            switch (subscription.state, subscription.epoch) {
            case (.live, let epoch?):
                subs.append((subscription.channel, StreamPosition(offset: subscription.lastOffset, epoch: epoch)))
            case (.awaitingReply, let epoch?) where subscription.writtenOffset != nil:
                subs.append((subscription.channel, StreamPosition(offset: subscription.writtenOffset!, epoch: epoch)))
            default:
                subs.append((subscription.channel, subscription.requestedSince))
            }
        }
        return subs
    }
}
