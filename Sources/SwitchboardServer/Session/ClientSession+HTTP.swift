import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardBroker
import SwitchboardCore

/// The session as SSE, long-poll and `/rpc` use it: connect implied by the request, commands that
/// arrive by HTTP body, objects gathered for one answer, and the SSE resume id.
extension ClientSession {

    /// Runs the `connect` an SSE stream or a poll implies (command id 1).
    func start(_ params: ConnectParams) {
        guard self.state == .awaitingConnect else { return }
        self.authenticateConnect(id: 1, params)
        self.flush()
    }

    /// Whether `secret` names this SSE session (compared in constant time).
    func matchesSession(secret: String) -> Bool {
        guard self.transport.isEventStream, self.state == .connected else { return false }
        let a = Array(self.sessionSecret.utf8)
        let b = Array(secret.utf8)
        guard a.count == b.count, !a.isEmpty else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
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
        guard self.state == .connected else { return .rejected(status: 404, message: "unknown session") }
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
            guard self.state == .connected else { break }
            self.handle(message)
        }
        self.receivingCommands = false
        self.flush()
        if case .collect(let collector) = self.transport {
            collector.isReady = true
            self.finishCollectingIfDue(collector)
        }
    }

    /// The poll's time is up: answer with what there is, or, while the subscriptions are still
    /// being made, as soon as they are (so even a zero timeout gets the positions).
    func collectTimedOut() {
        guard case .collect(let collector) = self.transport else { return }
        collector.timedOut = true
        self.finishCollectingIfDue(collector)
    }

    /// Sends a collecting session's answer now and ends the session.
    func finishCollecting() {
        guard case .collect(let collector) = self.transport else { return }
        collector.complete(allocator: self.allocator)
        self.close()
    }

    /// Ends a collecting session without an answer (its HTTP connection went away).
    func abandon() {
        if case .collect(let collector) = self.transport { collector.abandon() }
        self.close()
    }

    func finishCollectingIfDue(_ collector: ResponseCollector) {
        guard collector.isReady, !collector.isCompleted, !self.receivingCommands else { return }
        switch collector.purpose {
        case .poll:
            if !collector.objects.isEmpty || collector.timedOut { self.finishCollecting() }
        case .rpc:
            if (self.repliesAreDone && self.connectPending == nil) || collector.timedOut { self.finishCollecting() }
        }
    }

    /// A poll's connect result as poll objects: missed publications, or the position to go on from.
    func collectConnectResults(_ aggregate: ConnectAggregate, into collector: ResponseCollector) {
        for result in aggregate.results {
            var object = self.allocator.buffer(capacity: 128)
            switch result.outcome {
            case .success(let activation):
                var position = activation.position
                if activation.recovered == true {
                    // As many as fit in the answer; then the position of the last one that did,
                    // so the client's next poll goes on from there and nothing is lost.
                    var delivered: UInt64?
                    for publication in activation.publications {
                        var pub = self.allocator.buffer(capacity: 64 + publication.data.readableBytes)
                        pub.writePublicationPush(channel: result.channel, publication)
                        guard collector.append(pub) else { break }
                        delivered = publication.offset
                    }
                    if delivered == activation.publications.last?.offset { continue }
                    if let delivered, let epoch = position?.epoch {
                        position = StreamPosition(offset: delivered, epoch: epoch)
                    } else if let since = self.subscriptions[result.channel]?.requestedSince {
                        position = since
                    }
                }
                guard let position else { continue }  // no history: nothing to carry
                object.writeStaticString("{\"channel\":")
                object.writeJSONString(result.channel)
                object.writeStaticString(",\"position\":{\"offset\":")
                object.writeDecimal(position.offset)
                object.writeStaticString(",\"epoch\":")
                object.writeJSONString(position.epoch)
                if activation.recovered == false { object.writeStaticString(",\"recovered\":false") }
                object.writeStaticString("}}")
            case .failure(let error):
                object.writeStaticString("{\"channel\":")
                object.writeJSONString(result.channel)
                object.writeStaticString(",\"error\":")
                ResultWriter.writeError(&object, error)
                object.writeInteger(UInt8(ascii: "}"))
            }
            collector.appendPosition(object)
        }
    }

    /// The SSE event id: every subscription's position now (see `ResumeID`).
    var resumeID: String {
        var subs: [(channel: String, position: StreamPosition?)] = []
        subs.reserveCapacity(self.subscriptions.count)
        for subscription in self.subscriptions.values {
            let channel = subscription.channel
            if let epoch = subscription.epoch {
                subs.append((channel, StreamPosition(offset: subscription.lastOffset, epoch: epoch)))
            } else {
                subs.append((channel, subscription.requestedSince))
            }
        }
        subs.sort { $0.channel < $1.channel }
        return ResumeID.encode(subs)
    }

    /// One SSE event holding the JSON of a frame, with the session's current resume id.
    func eventStreamEvent(_ frame: ByteBuffer) -> ByteBuffer {
        var payload = WebSocketFrameBuilder.payload(of: frame)
        let id = self.resumeID
        var event = self.allocator.buffer(capacity: payload.readableBytes + id.utf8.count + 16)
        event.writeStaticString("data: ")
        event.writeBuffer(&payload)
        event.writeStaticString("\nid: ")
        event.writeString(id)
        event.writeStaticString("\n\n")
        return event
    }
}
