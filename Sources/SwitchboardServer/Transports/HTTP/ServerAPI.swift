import CoreMetrics
import NIOCore
import NIOHTTP1
import SwitchboardBroker
import SwitchboardCore

/// The HTTP server API for backends: `POST /api/<method>` with a JSON body
/// and `Authorization: apikey <key>`; answers `{"result": ...}` or `{"error": ...}`.
struct ServerAPI: Sendable {
    let node: NodeContext
    /// `data` (of `publish` and `broadcast`) is a member of the body object: kept raw, validated, never re-encoded.
    private static let parser = JSONParser(maximumDepth: 64, maximumValues: 100_000, rawMembers: [.init(key: "data", depth: 1)])

    init(node: NodeContext) {
        self.node = node
    }

    func handle(method: String, authorization: String?, body: ByteBuffer) -> EventLoopFuture<HTTPResponse> {
        let loop = self.node.hub.eventLoop
        guard self.isAuthorized(authorization) else {
            return loop.makeSucceededFuture(Self.unauthorized)
        }
        let params: JSONObject
        if body.readableBytes == 0 {
            params = JSONObject()
        } else {
            let parsed: JSONValue? = body.withUnsafeReadableBytes { bytes in
                guard UTF8Validation.isValid(bytes) else { return nil }
                return try? Self.parser.parse(UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count: bytes.count))
            }
            guard let parsed, case .object(let object) = parsed else {
                return loop.makeSucceededFuture(.json(.badRequest, Self.errorBody(.badRequest("body is not a JSON object"))))
            }
            params = object
        }
        let result: EventLoopFuture<ByteBuffer>
        do {
            switch method {
            case "publish": result = try self.publish(params)
            case "broadcast": result = try self.broadcast(params)
            case "presence": result = try self.presence(params, statsOnly: false)
            case "presenceStats": result = try self.presence(params, statsOnly: true)
            case "history": result = try self.history(params)
            case "channels": result = try self.channels(params)
            case "info": result = self.info()
            case "disconnect": result = try self.disconnect(params)
            case "unsubscribe": result = try self.unsubscribe(params)
            case "rebalance":
                // Node-side rebalancing: a round at the next tick if this node is over, without the hold.
                self.node.requestRebalance()
                let enabled = self.node.configuration.rebalance
                result = loop.makeSucceededFuture(Self.result { $0.writeString(enabled ? #"{"rebalance":true}"# : #"{"rebalance":false}"#) })
            default:
                return loop.makeSucceededFuture(.json(.notFound, Self.errorBody(.methodNotFound)))
            }
        } catch {
            return loop.makeSucceededFuture(.json(.ok, Self.errorBody(error)))
        }
        return result.map { .json(.ok, $0) }.recover { error in
            .json(.ok, Self.errorBody((error as? SwitchboardError) ?? .internalError))
        }
    }

    /// The answer to a request without the right key.
    static var unauthorized: HTTPResponse {
        .json(.unauthorized, Self.errorBody(SwitchboardError(.unauthorized, "missing or wrong api key")))
    }

    /// Whether an `Authorization` header carries the API key (`apikey <key>`), compared in constant time.
    func isAuthorized(_ header: String?) -> Bool {
        guard let header else { return false }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "apikey" else { return false }
        return ConstantTime.equals(parts[1], self.node.configuration.apiKey)
    }

    /// `{"error":{...}}`.
    static func errorBody(_ error: SwitchboardError) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeJSONObject { answer in
            answer.object("error") { ResultWriter.errorFields(&$0, error) }
        }
        return buffer
    }

    /// `{"result":<what body writes>}`.
    private static func result(_ body: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeJSONObject { answer in
            answer.field("result", writtenBy: body)
        }
        return buffer
    }

    /// `{"result":{...}}` with the members `body` writes.
    private static func resultObject(_ body: (inout JSONObjectWriter) -> Void) -> ByteBuffer {
        Self.result { $0.writeJSONObject(body) }
    }

    private func publishRequest(channel: String, data: RawJSON, idempotencyKey: String?) -> PublishRequest {
        let options = self.node.configuration.namespaces.options(for: channel)
        return PublishRequest(
            channel: channel,
            data: data.bytes,
            historySize: options.historySize,
            historyTTL: options.historyTTL,
            idempotencyKey: idempotencyKey,
            idempotencyWindow: self.node.configuration.idempotencyWindow,
            time: UInt64(NIODeadline.wallClockNanoseconds)
        )
    }

    private func publish(_ params: JSONObject) throws(SwitchboardError) -> EventLoopFuture<ByteBuffer> {
        let channel = try ClientMessage.channel(params)
        guard let data = params["data"].map(RawJSON.init) else { throw .badRequest("publish needs data") }
        let key = try ClientMessage.optionalString(params, "idempotencyKey")
        let metrics = self.node.metrics
        metrics.publications.increment()
        let started = NIODeadline.now()
        return self.node.broker.publish(self.publishRequest(channel: channel, data: data, idempotencyKey: key)).map { published in
            metrics.brokerPublishDuration.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
            return Self.result { ResultWriter.writePublishResult(&$0, published) }
        }
    }

    private func broadcast(_ params: JSONObject) throws(SwitchboardError) -> EventLoopFuture<ByteBuffer> {
        guard let channels = params["channels"]?.arrayValue, !channels.isEmpty else { throw .badRequest("channels must be a non-empty array") }
        guard channels.count <= 1000 else { throw .limitExceeded("at most 1000 channels per broadcast") }
        guard let data = params["data"].map(RawJSON.init) else { throw .badRequest("broadcast needs data") }
        var names: [String] = []
        for value in channels {
            guard let channel = value.stringValue else { throw .badRequest("channels must be strings") }
            try ChannelName.validate(channel)
            names.append(channel)
        }
        // Every name is checked before anything is published: a bad one rejects the whole broadcast.
        self.node.metrics.publications.increment(by: names.count)
        var futures: [EventLoopFuture<Result<PublishResult, SwitchboardError>>] = []
        for channel in names {
            let future = self.node.broker.publish(self.publishRequest(channel: channel, data: data, idempotencyKey: nil))
                .map { Result<PublishResult, SwitchboardError>.success($0) }
                .recover { _ in .failure(.internalError) }
            futures.append(future)
        }
        return EventLoopFuture.whenAllSucceed(futures, on: self.node.hub.eventLoop).map { results in
            Self.resultObject { answer in
                answer.array("responses") { responses in
                    for result in results {
                        switch result {
                        case .success(let published):
                            responses.object { $0.field("result") { ResultWriter.writePublishResult(&$0, published) } }
                        case .failure(let error):
                            responses.object { $0.object("error") { ResultWriter.errorFields(&$0, error) } }
                        }
                    }
                }
            }
        }
    }

    private func presence(_ params: JSONObject, statsOnly: Bool) throws(SwitchboardError) -> EventLoopFuture<ByteBuffer> {
        let channel = try ClientMessage.channel(params)
        guard self.node.configuration.namespaces.options(for: channel).presence else {
            throw SwitchboardError(.notAvailable, "presence is off for this channel")
        }
        return self.node.hub.presence(channel: channel).map { clients in
            Self.result { buffer in
                if statsOnly { ResultWriter.writePresenceStats(&buffer, clients) } else { ResultWriter.writePresence(&buffer, clients, includingMeta: true) }
            }
        }
    }

    private func history(_ params: JSONObject) throws(SwitchboardError) -> EventLoopFuture<ByteBuffer> {
        let query = try HistoryParams.parse(params)
        guard self.node.configuration.namespaces.options(for: query.channel).keepsHistory else {
            throw SwitchboardError(.notAvailable, "history is off for this channel")
        }
        return self.node.broker.history(HistoryQuery(query, maximumLimit: self.node.configuration.maxHistoryLimit)).map { history in
            Self.result { ResultWriter.writeHistory(&$0, history, since: query.since) }
        }
    }

    private func channels(_ params: JSONObject) throws(SwitchboardError) -> EventLoopFuture<ByteBuffer> {
        let pattern = try ClientMessage.optionalString(params, "pattern")
        return self.node.hub.channelList().map { list in
            Self.resultObject { answer in
                answer.object("channels") { channels in
                    for entry in list where pattern.map({ ChannelName.matches(entry.name, pattern: $0) }) ?? true {
                        channels.object(entry.name) { $0.field("subscribers", int: entry.subscribers) }
                    }
                }
            }
        }
    }

    private func info() -> EventLoopFuture<ByteBuffer> {
        let node = self.node
        return node.announceSelf().flatMap { node.broker.nodes() }.map { nodes in
            Self.resultObject { answer in
                answer.field("insecure", bool: node.isInsecure)
                answer.array("nodes") { entries in
                    for node in nodes {
                        entries.object { entry in
                            entry.field("id", string: node.id)
                            entry.field("name", string: node.name)
                            entry.field("address", string: node.address)
                            entry.field("connections", int: node.connections)
                            entry.field("subscriptions", int: node.subscriptions)
                            entry.field("channels", int: node.channels)
                            entry.field("uptime", int: Int(node.uptime))
                            entry.field("draining", bool: node.draining)
                        }
                    }
                }
            }
        }
    }

    private func disconnect(_ params: JSONObject) throws(SwitchboardError) -> EventLoopFuture<ByteBuffer> {
        let client = try ClientMessage.optionalString(params, "client")
        let user = try ClientMessage.optionalString(params, "user")
        guard client != nil || user != nil else { throw .badRequest("disconnect needs client or user") }
        var code = DisconnectCode.forced.rawValue
        if let value = params["code"], value != .null {
            guard let number = value.intValue, number >= 3000, number <= 4999 else { throw .badRequest("code must be within 3000-4999") }
            code = UInt16(number)
        }
        let reason = try ClientMessage.optionalString(params, "reason") ?? DisconnectCode.forced.reason
        return self.node.broker.sendControl(.disconnect(client: client, user: user, code: code, reason: reason), to: nil)
            .map { Self.resultObject { _ in } }
    }

    private func unsubscribe(_ params: JSONObject) throws(SwitchboardError) -> EventLoopFuture<ByteBuffer> {
        guard let user = try ClientMessage.optionalString(params, "user") else { throw .badRequest("unsubscribe needs user") }
        let channel = try ClientMessage.channel(params)
        return self.node.broker.sendControl(.unsubscribe(user: user, channel: channel), to: nil)
            .map { Self.resultObject { _ in } }
    }
}
