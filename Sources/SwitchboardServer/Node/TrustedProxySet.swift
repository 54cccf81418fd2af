import SwitchboardCore

/// The `--trusted-proxy` list: IP addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`) of proxies in
/// front of the node. Only connections from them may tell the node the client's address (PROXY protocol
/// v2 or `X-Forwarded-For`), and their connections that do not are exempt from the per-address caps.
struct TrustedProxySet: Sendable, Hashable {
    private struct Block: Sendable, Hashable {
        var bytes: [UInt8]
        var prefixLength: Int
    }

    private var blocks: [Block] = []

    /// No trusted proxy.
    init() {}

    /// Parses `ADDRESS` or `ADDRESS/PREFIX` entries; the error names the first entry that is neither.
    init(_ entries: [String]) throws(ConfigurationError) {
        for entry in entries {
            guard let block = Self.parse(entry) else {
                throw ConfigurationError("trusted proxy \(entry): expected an IP address or ADDRESS/PREFIX")
            }
            self.blocks.append(block)
        }
    }

    private static func parse(_ entry: String) -> Block? {
        let parts = entry.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let bytes = ProxyProtocolHeader.addressBytes(String(parts[0])) else { return nil }
        var prefix = bytes.count * 8
        if parts.count == 2 {
            guard let p = Int(parts[1]), (0...bytes.count * 8).contains(p) else { return nil }
            prefix = p
        }
        return Block(bytes: bytes, prefixLength: prefix)
    }

    var isEmpty: Bool { self.blocks.isEmpty }

    /// Whether `address` (an IP literal) lies in one of the blocks.
    func contains(_ address: String) -> Bool {
        guard !self.blocks.isEmpty, let bytes = ProxyProtocolHeader.addressBytes(address) else { return false }
        return self.blocks.contains { block in
            guard block.bytes.count == bytes.count else { return false }
            var remaining = block.prefixLength
            for i in 0..<bytes.count where remaining > 0 {
                let bits = min(8, remaining)
                let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
                if bytes[i] & mask != block.bytes[i] & mask { return false }
                remaining -= bits
            }
            return true
        }
    }
}
