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
        // On bytes: as Characters, a `-` or `.` after a prepended mark (U+0600...) would not delimit.
        let utf8 = text.utf8
        guard utf8.count <= 200, let dot = utf8.lastIndex(of: UInt8(ascii: ".")) else { return nil }
        let client = utf8[..<dot]
        let secret = utf8[utf8.index(after: dot)...]
        guard secret.count == 32, secret.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else { return nil }
        let parts = client.split(separator: UInt8(ascii: "-"), omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[2].isEmpty else { return nil }
        // The loop as LoopFanout writes it: digits, no sign, no leading zero (`Int` takes "+0" and "00").
        let digits = parts[1]
        guard !digits.isEmpty, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), digits.count == 1 || digits.first != 0x30,
            let loop = Int(Substring(digits))
        else { return nil }
        self.client = String(Substring(client))
        self.secret = String(Substring(secret))
        self.node = String(Substring(parts[0]))
        self.loop = loop
    }
}
