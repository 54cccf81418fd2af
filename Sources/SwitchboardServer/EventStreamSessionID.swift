/// An SSE session id, `<client>.<secret>`: the client id names the node and
/// event loop that hold the stream (`<node>-<loop>-<n>`), the secret proves
/// the right to send commands as that client (the client id alone is public:
/// it appears in presence and publication info).
struct EventStreamSessionID: Sendable, Hashable {
    var client: String
    var secret: String
    var node: String
    var loop: Int

    /// Nil for anything that is not a well-formed session id.
    init?(_ text: Substring) {
        guard text.utf8.count <= 200, let dot = text.lastIndex(of: ".") else { return nil }
        let client = text[..<dot]
        let secret = text[text.index(after: dot)...]
        guard secret.utf8.count == 32, secret.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else { return nil }
        let parts = client.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, let loop = Int(parts[1]), loop >= 0, !parts[2].isEmpty else { return nil }
        self.client = String(client)
        self.secret = String(secret)
        self.node = String(parts[0])
        self.loop = loop
    }
}
