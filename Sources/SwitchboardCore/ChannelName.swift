import Foundation

/// Rules for channel names.
public enum ChannelName {
    /// The longest channel name accepted, in UTF-8 bytes.
    public static let maximumLength = 255

    /// Checks a client-supplied channel name: non-empty, at most 255 bytes, no control characters,
    /// and in Unicode NFC.
    ///
    /// NFC, because Swift's `String` equality is canonical equivalence while everything that places a
    /// channel works on its bytes (the hub shard's hash, Redis keys): `"café"` precomposed and `"cafe"`
    /// + U+0301 would be one key in a node's tables, yet hash to two shards and name two Redis
    /// channels. Among NFC strings, canonically equivalent means byte-equal, so every layer agrees on
    /// what one channel is. ASCII names (nearly all) are NFC by construction and skip the check.
    public static func validate(_ name: String) throws(SwitchboardError) {
        let utf8 = name.utf8
        guard !utf8.isEmpty else { throw .badRequest("channel name is empty") }
        guard utf8.count <= maximumLength else { throw .badRequest("channel name is longer than 255 bytes") }
        for scalar in name.unicodeScalars where scalar.value < 0x20 || (scalar.value >= 0x7F && scalar.value < 0xA0) {
            throw .badRequest("channel name contains a control character")
        }
        if utf8.contains(where: { $0 >= 0x80 }), !name.precomposedStringWithCanonicalMapping.utf8.elementsEqual(utf8) {
            throw .badRequest("channel name is not in Unicode NFC (normalize it before use)")
        }
    }

    /// The namespace of a channel: the part before the first `:`, or nil when there is none.
    public static func namespace(of name: String) -> Substring? {
        guard let colon = name.firstIndex(of: ":") else { return nil }
        return name[..<colon]
    }

    /// The separator of a user-limited channel's user list: `dialog#alice,bob`.
    public static let userLimitSeparator: Character = "#"

    /// The users a user-limited channel (`name#u1,u2`) admits; nil when the name has no `#`.
    /// At most 64 users are read (a longer list admits nobody past the 64th).
    public static func limitedUsers(of name: String) -> [Substring]? {
        guard let hash = name.lastIndex(of: Self.userLimitSeparator) else { return nil }
        return Array(name[name.index(after: hash)...].split(separator: ",", maxSplits: 64, omittingEmptySubsequences: true).prefix(64))
    }

    /// Whether `name` matches a glob `pattern` where `*` matches any run of characters.
    public static func matches(_ name: String, pattern: String) -> Bool {
        let n = Array(name.utf8)
        let p = Array(pattern.utf8)
        var ni = 0
        var pi = 0
        var star = -1
        var mark = 0
        while ni < n.count {
            if pi < p.count, p[pi] == UInt8(ascii: "*") {
                star = pi
                mark = ni
                pi += 1
            } else if pi < p.count, p[pi] == n[ni] {
                pi += 1
                ni += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ni = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}
