/// Comparison of secrets (API keys, session secrets) whose time does not
/// depend on where the first difference is, so timing cannot reveal a prefix.
public enum ConstantTime {
    /// Whether `given` equals `expected`; an empty `expected` never matches.
    public static func equals(_ given: some StringProtocol, _ expected: some StringProtocol) -> Bool {
        let a = Array(given.utf8)
        let b = Array(expected.utf8)
        guard a.count == b.count, !b.isEmpty else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }
}
