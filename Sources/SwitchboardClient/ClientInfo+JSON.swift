import SwitchboardCore

extension ClientInfo {
    /// A client as a node describes it (`{"client":…,"user":…,"info":…}`).
    init?(json: JSONValue) {
        guard let client = json["client"]?.stringValue else { return nil }
        self.init(client: client, user: json["user"]?.stringValue ?? "", info: json["info"], meta: json["meta"])
    }
}
