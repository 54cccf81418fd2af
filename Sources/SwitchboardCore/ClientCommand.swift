/// One protocol command sent by a client: `{"id": N, "<method>": {params}}`.
public struct ClientCommand: Sendable, Hashable {
    /// The method a command names.
    public enum Method: Hashable, Sendable {
        case connect(ConnectParams)
        case subscribe(SubscribeParams)
        case unsubscribe(channel: String)
        case publish(PublishParams)
        case presence(channel: String)
        case presenceStats(channel: String)
        case history(HistoryParams)
        /// A new connection token for the same user (`refresh`).
        case refresh(token: String)
        /// A new subscription token for a channel the client is subscribed to (`subRefresh`).
        case subRefresh(channel: String, token: String)
        case ping
        /// A method this server does not know (answered with error 104).
        case unknown(String)
    }

    public var id: UInt32
    public var method: Method

    public init(id: UInt32, method: Method) {
        self.id = id
        self.method = method
    }
}

/// What one JSON object from a client is.
public enum ClientMessage: Sendable, Hashable {
    /// `{}`: the answer to a server ping.
    case pong
    case command(ClientCommand)
    /// A command with a valid id whose parameters are wrong: answered with an error, the connection stays.
    case invalid(id: UInt32, SwitchboardError)
}

/// A frame that breaks the protocol badly enough to end the connection (3501).
public struct ProtocolViolation: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { self.message }
}

public struct ConnectParams: Sendable, Hashable {
    public var token: String?
    public var name: String?
    public var version: String?
    /// Channels to subscribe to as part of connecting, with positions to recover from.
    public var subs: [(channel: String, since: StreamPosition?)]
    /// Subscription tokens given in `subs` (`{channel: {offset?, epoch?, token}}`), by channel: how a
    /// channel that needs one is subscribed by `connect` and followed by a poll, which has no
    /// `subscribe` command to carry it.
    public var subTokens: [String: String]

    public init(
        token: String? = nil, name: String? = nil, version: String? = nil, subs: [(channel: String, since: StreamPosition?)] = [],
        subTokens: [String: String] = [:]
    ) {
        self.token = token
        self.name = name
        self.version = version
        self.subs = subs
        self.subTokens = subTokens
    }

    public static func == (lhs: ConnectParams, rhs: ConnectParams) -> Bool {
        lhs.token == rhs.token && lhs.name == rhs.name && lhs.version == rhs.version && lhs.subTokens == rhs.subTokens
            && lhs.subs.count == rhs.subs.count
            && zip(lhs.subs, rhs.subs).allSatisfy { $0.channel == $1.channel && $0.since == $1.since }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.token)
        hasher.combine(self.subs.count)
    }
}

public struct SubscribeParams: Sendable, Hashable {
    public var channel: String
    public var since: StreamPosition?
    public var token: String?

    public init(channel: String, since: StreamPosition? = nil, token: String? = nil) {
        self.channel = channel
        self.since = since
        self.token = token
    }
}

public struct PublishParams: Sendable, Hashable {
    public var channel: String
    /// The payload as the client sent it, validated, never re-encoded (`RawJSON`).
    public var data: RawJSON
    public var idempotencyKey: String?

    public init(channel: String, data: RawJSON, idempotencyKey: String? = nil) {
        self.channel = channel
        self.data = data
        self.idempotencyKey = idempotencyKey
    }
}

public struct HistoryParams: Sendable, Hashable {
    public var channel: String
    public var since: StreamPosition?
    public var limit: Int?
    public var reverse: Bool

    public init(channel: String, since: StreamPosition? = nil, limit: Int? = nil, reverse: Bool = false) {
        self.channel = channel
        self.since = since
        self.limit = limit
        self.reverse = reverse
    }
}

extension ClientMessage {
    /// What a parser of client commands keeps raw: `publish.data` (`{"id":N,"publish":{"data":..}}`,
    /// so a member of an object at depth 2). The value is validated, not built into a tree.
    public static let rawMembers = [JSONParser.RawMember(key: "data", depth: 2)]

    /// A parser for client commands, with `publish.data` kept raw.
    public static func parser(maximumDepth: Int = 64, maximumValues: Int = 50_000) -> JSONParser {
        JSONParser(maximumDepth: maximumDepth, maximumValues: maximumValues, rawMembers: Self.rawMembers)
    }

    /// Classifies one JSON object from a client.
    public static func parse(_ value: JSONValue) throws(ProtocolViolation) -> ClientMessage {
        guard case .object(let object) = value else { throw ProtocolViolation("a command must be a JSON object") }
        if object.isEmpty { return .pong }
        guard let idValue = object["id"] else { throw ProtocolViolation("command without id") }
        guard let rawID = idValue.uint64Value, rawID > 0, rawID <= UInt64(UInt32.max) else {
            throw ProtocolViolation("id must be a positive integer")
        }
        let id = UInt32(rawID)
        guard let member = object.members.first(where: { $0.key != "id" }) else {
            throw ProtocolViolation("command without method")
        }
        let params: JSONObject
        switch member.value {
        case .object(let o): params = o
        case .null: params = JSONObject()
        default: return .invalid(id: id, .badRequest("params must be an object"))
        }
        do {
            return .command(ClientCommand(id: id, method: try Self.method(member.key, params)))
        } catch {
            return .invalid(id: id, error)
        }
    }

    private static func method(_ name: String, _ params: JSONObject) throws(SwitchboardError) -> ClientCommand.Method {
        switch name {
        case "connect":
            return .connect(try ConnectParams.parse(params))
        case "subscribe":
            return .subscribe(
                SubscribeParams(
                    channel: try Self.channel(params),
                    since: try params["since"].flatMap { v throws(SwitchboardError) in try Self.position(v, allowEmpty: false) },
                    token: try Self.optionalString(params, "token")
                )
            )
        case "unsubscribe":
            return .unsubscribe(channel: try Self.channel(params))
        case "publish":
            guard let data = params["data"] else { throw .badRequest("publish needs data") }
            return .publish(
                PublishParams(
                    channel: try Self.channel(params),
                    data: RawJSON(data),
                    idempotencyKey: try Self.idempotencyKey(params)
                )
            )
        case "presence":
            return .presence(channel: try Self.channel(params))
        case "presenceStats":
            return .presenceStats(channel: try Self.channel(params))
        case "history":
            return .history(try HistoryParams.parse(params))
        case "refresh":
            return .refresh(token: try Self.token(params))
        case "subRefresh":
            return .subRefresh(channel: try Self.channel(params), token: try Self.token(params))
        case "ping":
            return .ping
        default:
            return .unknown(name)
        }
    }

    public static func channel(_ params: JSONObject) throws(SwitchboardError) -> String {
        guard let channel = params["channel"]?.stringValue else { throw .badRequest("channel must be a string") }
        try ChannelName.validate(channel)
        return channel
    }

    /// The `token` of `refresh` and `subRefresh`: a non-empty string (its size is the verifier's to cap).
    public static func token(_ params: JSONObject) throws(SwitchboardError) -> String {
        guard let token = try Self.optionalString(params, "token"), !token.isEmpty else { throw .badRequest("token must be a non-empty string") }
        return token
    }

    public static func optionalString(_ params: JSONObject, _ key: String) throws(SwitchboardError) -> String? {
        guard let value = params[key], value != .null else { return nil }
        guard let s = value.stringValue else { throw .badRequest("\(key) must be a string") }
        return s
    }

    /// Longest idempotency key, in bytes (longer ones are refused with 107, never stored).
    public static let maximumIdempotencyKeyLength = 128

    /// The optional `idempotencyKey` of a publish: a non-empty string of at most 128 bytes.
    public static func idempotencyKey(_ params: JSONObject) throws(SwitchboardError) -> String? {
        guard let key = try Self.optionalString(params, "idempotencyKey") else { return nil }
        guard !key.isEmpty, key.utf8.count <= Self.maximumIdempotencyKeyLength else {
            throw .badRequest("idempotencyKey must be 1 to \(Self.maximumIdempotencyKeyLength) bytes")
        }
        return key
    }

    /// Parses `{offset, epoch}`; with `allowEmpty`, `{}` means "no position".
    ///
    /// Offsets are at most `StreamPosition.maximumOffset` (`Int64.max`): every broker and every
    /// `offset + 1` downstream relies on that bound, so larger ones are refused here (107).
    public static func position(_ value: JSONValue, allowEmpty: Bool) throws(SwitchboardError) -> StreamPosition? {
        guard case .object(let o) = value else { throw .badRequest("position must be an object") }
        if allowEmpty, o["offset"] == nil, o["epoch"] == nil { return nil }
        guard let offset = o["offset"]?.uint64Value, offset <= StreamPosition.maximumOffset else {
            throw .badRequest("offset must be an integer from 0 to \(StreamPosition.maximumOffset)")
        }
        guard let epoch = o["epoch"]?.stringValue else { throw .badRequest("epoch must be a string") }
        guard epoch.utf8.count <= StreamPosition.maximumEpochLength else {
            throw .badRequest("epoch must be at most \(StreamPosition.maximumEpochLength) bytes")
        }
        return StreamPosition(offset: offset, epoch: epoch)
    }
}

extension ConnectParams {
    /// Parses `connect` parameters (shared by the WebSocket command, the SSE `connect` query and polls).
    public static func parse(_ params: JSONObject) throws(SwitchboardError) -> ConnectParams {
        ConnectParams(
            token: try ClientMessage.optionalString(params, "token"),
            name: try ClientMessage.optionalString(params, "name"),
            version: try ClientMessage.optionalString(params, "version"),
            subs: try params["subs"].map { v throws(SwitchboardError) in try Self.parseSubs(v) } ?? [],
            subTokens: try params["subs"].map { v throws(SwitchboardError) in try Self.parseSubTokens(v) } ?? [:]
        )
    }

    /// Most subscription tokens one `connect`, poll or stream opening may carry. Each is a
    /// signature check (up to ~35 µs for ES256) that no command bucket paces, so one request may
    /// not ask for thousands; 64 private channels per client is far more than chat or dashboard
    /// clients follow.
    public static let maximumSubTokens = 64

    /// The `token` members of a `subs` object's entries, by channel (entries without one are
    /// left out). A token that is not a string is refused, as are more than `maximumSubTokens`
    /// (106); a token's size is the verifier's to check.
    public static func parseSubTokens(_ value: JSONValue) throws(SwitchboardError) -> [String: String] {
        guard case .object(let subsObject) = value else { throw .badRequest("subs must be an object") }
        var tokens: [String: String] = [:]
        var count = 0  // entries with a token, duplicates included: each would be a signature check
        for member in subsObject.members {
            guard case .object(let entry) = member.value, let token = entry["token"], token != .null else { continue }
            guard let text = token.stringValue else { throw .badRequest("a token in subs must be a string") }
            count += 1
            guard count <= Self.maximumSubTokens else {
                throw .limitExceeded("at most \(Self.maximumSubTokens) subscription tokens in subs")
            }
            tokens[member.key] = text
        }
        return tokens
    }

    /// Parses a `subs` object: `{channel: {offset?, epoch?}}`, `{}` meaning no position.
    /// At most `maximumSubs` channels (the caller's subscription limit); more is refused with 106.
    /// A channel named twice is refused (107): JSON objects may repeat a member, and each repeat
    /// would be another subscription attempt (and another token check) for one channel.
    public static func parseSubs(_ value: JSONValue, maximumSubs: Int = 10_000) throws(SwitchboardError) -> [(channel: String, since: StreamPosition?)] {
        guard case .object(let subsObject) = value else { throw .badRequest("subs must be an object") }
        guard subsObject.members.count <= maximumSubs else { throw .limitExceeded("at most \(maximumSubs) channels in subs") }
        var subs: [(channel: String, since: StreamPosition?)] = []
        var seen = Set<String>(minimumCapacity: subsObject.members.count)
        for member in subsObject.members {
            guard seen.insert(member.key).inserted else { throw .badRequest("a channel is named more than once in subs") }
            subs.append((member.key, try ClientMessage.position(member.value, allowEmpty: true)))
        }
        return subs
    }
}

extension HistoryParams {
    /// Parses history parameters (shared by the client protocol and the HTTP API).
    public static func parse(_ params: JSONObject) throws(SwitchboardError) -> HistoryParams {
        var limit: Int?
        if let l = params["limit"], l != .null {
            // Any integer literal is taken (a huge or negative one means "as many as allowed");
            // the caller clamps it to its maximum, so no client number reaches arithmetic unchecked.
            guard case .number(let text) = l, !text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }) else {
                throw .badRequest("limit must be an integer")
            }
            if text.hasPrefix("-") {
                limit = -1
            } else {
                limit = Int(text) ?? Int.max
            }
        }
        var reverse = false
        if let r = params["reverse"], r != .null {
            guard let value = r.boolValue else { throw .badRequest("reverse must be a boolean") }
            reverse = value
        }
        return HistoryParams(
            channel: try ClientMessage.channel(params),
            since: try params["since"].flatMap { v throws(SwitchboardError) in try ClientMessage.position(v, allowEmpty: true) },
            limit: limit,
            reverse: reverse
        )
    }
}
