/// The query string of a request target, percent-decoded (`+` is a space).
struct HTTPQuery: Sendable {
    private(set) var values: [String: String] = [:]
    /// Every parameter name present, also those whose value could not be decoded.
    private(set) var names: Set<String> = []

    init(uri: String) {
        // On bytes: as Characters, a `?`, `&` or `=` followed by a combining mark would not delimit.
        let utf8 = uri.utf8
        guard let mark = utf8.firstIndex(of: UInt8(ascii: "?")) else { return }
        for pair in utf8[utf8.index(after: mark)...].split(separator: UInt8(ascii: "&")) {
            let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.decode(Substring(parts[0])) else { continue }
            self.names.insert(name)
            let value = parts.count > 1 ? Self.decode(Substring(parts[1])) : ""
            if let value, self.values[name] == nil { self.values[name] = value }
        }
    }

    subscript(_ name: String) -> String? { self.values[name] }

    /// Whether the query names `name`, with any value (even a malformed one).
    func contains(_ name: String) -> Bool { self.names.contains(name) }

    /// Nil when an escape is malformed or the bytes are not UTF-8.
    static func decode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"):
                bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(Self.hexValue), let low = iterator.next().flatMap(Self.hexValue) else { return nil }
                bytes.append(high << 4 | low)
            default:
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
