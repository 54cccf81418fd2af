extension StringProtocol {
    /// An HTTP field value without the spaces and tabs around it (RFC 9110 5.5: optional
    /// whitespace is only those two bytes, not every Unicode space or grapheme that starts with one).
    func trimmingFieldWhitespace() -> String {
        let bytes = Substring(self).utf8
        let isWhitespace: (UInt8) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        guard let first = bytes.firstIndex(where: { !isWhitespace($0) }), let last = bytes.lastIndex(where: { !isWhitespace($0) }) else {
            return ""
        }
        return String(decoding: bytes[first...last], as: UTF8.self)
    }
}
