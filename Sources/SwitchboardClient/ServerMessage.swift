import SwitchboardCore

/// One JSON object a node sent: a reply to a command, a push, or a ping.
enum ServerMessage: Equatable, Sendable {
    /// A command's result (`{"id":…,"result":{…}}`).
    case result(id: UInt64, JSONObject)
    /// A command's error (`{"id":…,"error":{…}}`).
    case error(id: UInt64, SwitchboardError)
    /// A new publication in a channel.
    case publication(channel: String, ClientPublication)
    /// A client joined or left a channel (namespaces with `joinLeave`).
    case join(channel: String, ClientInfo)
    case leave(channel: String, ClientInfo)
    /// The node removed the subscription.
    case unsubscribed(channel: String, code: Int, reason: String)
    /// The node is about to close the connection.
    case disconnect(code: UInt16, reason: String, reconnect: Bool)
    /// `{}`: a ping, answered with `{}` when the connect result said `pong`.
    case ping
    /// Anything else (fields a later protocol version may add are ignored, as the protocol asks).
    case unknown

    /// `data` is kept as its source text wherever a publication carries it: in a push (depth 2), in
    /// a `history`/`subscribe` result's list (4: arrays count), in a connect result's `subs` (6).
    static let parser = JSONParser(
        maximumDepth: 64,
        maximumValues: 1_000_000,
        rawMembers: [
            .init(key: "data", depth: 2), .init(key: "data", depth: 4), .init(key: "data", depth: 6),
        ])

    /// For the JSON arrays of long-polling's answers: a poll's items (a publication's `data` at
    /// depth 3) and `/rpc`'s replies (a history result's publications at 5).
    static let arrayParser = JSONParser(
        maximumDepth: 64,
        maximumValues: 1_000_000,
        rawMembers: [.init(key: "data", depth: 3), .init(key: "data", depth: 5)])

    /// The messages of one text frame (objects separated by `\n`).
    static func decode(frame: some Collection<UInt8>) throws(JSONParser.Error) -> [ServerMessage] {
        try Self.parser.parseSequence(frame).map(Self.init(json:))
    }

    init(json: JSONValue) {
        guard case .object(let object) = json else {
            self = .unknown
            return
        }
        if object.isEmpty {
            self = .ping
            return
        }
        if let idValue = object["id"] {
            guard let id = idValue.uint64Value else {
                self = .unknown
                return
            }
            if let error = object["error"]?.objectValue {
                self = .error(id: id, Self.error(error))
            } else {
                self = .result(id: id, object["result"]?.objectValue ?? JSONObject())
            }
            return
        }
        if let disconnect = object["disconnect"]?.objectValue {
            let code = disconnect["code"]?.uint64Value.flatMap { UInt16(exactly: $0) } ?? 3000
            self = .disconnect(
                code: code, reason: disconnect["reason"]?.stringValue ?? "",
                reconnect: disconnect["reconnect"]?.boolValue ?? (code < 3500))
            return
        }
        guard let channel = object["channel"]?.stringValue else {
            self = .unknown
            return
        }
        if let pub = object["pub"]?.objectValue, let publication = ClientPublication(json: pub) {
            self = .publication(channel: channel, publication)
        } else if let join = object["join"].flatMap(ClientInfo.init(json:)) {
            self = .join(channel: channel, join)
        } else if let leave = object["leave"].flatMap(ClientInfo.init(json:)) {
            self = .leave(channel: channel, leave)
        } else if let unsubscribe = object["unsubscribe"]?.objectValue {
            self = .unsubscribed(
                channel: channel, code: unsubscribe["code"]?.intValue ?? 2000, reason: unsubscribe["reason"]?.stringValue ?? "")
        } else {
            self = .unknown
        }
    }

    static func error(_ object: JSONObject) -> SwitchboardError {
        let code = object["code"]?.intValue ?? 100
        let message = object["message"]?.stringValue
        let temporary = object["temporary"]?.boolValue ?? false
        return SwitchboardError(SwitchboardError.Code(code, message ?? "error \(code)", temporary: temporary), message)
    }
}
