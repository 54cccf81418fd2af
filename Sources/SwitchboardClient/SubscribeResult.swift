import SwitchboardCore

/// A node's answer to `subscribe` (or one channel of a connect's `subs`).
struct SubscribeResult: Equatable, Sendable {
    /// The channel's position: its latest publication; nil in a channel without history.
    var position: StreamPosition?
    /// Whether the channel can be recovered later.
    var recoverable: Bool
    /// Whether the node answered a `since`: nil when none was sent.
    var recovered: Bool?
    /// The publications after `since`, oldest first (only when `recovered`).
    var publications: [ClientPublication]

    init(position: StreamPosition?, recoverable: Bool, recovered: Bool? = nil, publications: [ClientPublication] = []) {
        self.position = position
        self.recoverable = recoverable
        self.recovered = recovered
        self.publications = publications
    }

    init(json: JSONObject) {
        if let offset = json["offset"]?.uint64Value, let epoch = json["epoch"]?.stringValue {
            self.position = StreamPosition(offset: offset, epoch: epoch)
        } else {
            self.position = nil
        }
        self.recoverable = json["recoverable"]?.boolValue ?? false
        self.recovered = json["recovered"]?.boolValue
        self.publications = (json["publications"]?.arrayValue ?? []).compactMap { $0.objectValue.flatMap(ClientPublication.init(json:)) }
    }
}
