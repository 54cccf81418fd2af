public import NIOCore

extension ClientInfo {
    /// Reads a client's info as `writeClientInfo` writes it (with or without `info` and `meta`).
    ///
    /// The plain shape, `{"client":"…","user":"…"}` with printable ASCII and no escapes in both
    /// strings (what every anonymous or info-less client publishes), is read without a JSON tree:
    /// every publication through Redis carries one, read again by every node. Anything else goes
    /// through `parser`; both ways give the same value (`ClientInfoDecodingTests`).
    public static func decode(_ bytes: ByteBuffer, parser: JSONParser) -> ClientInfo? {
        if let plain = bytes.withUnsafeReadableBytes({ Self.plain($0) }) { return plain }
        return Self.decodeJSON(bytes, parser: parser)
    }

    /// The general way: parse, then read `client`, `user`, `info` and `meta`.
    static func decodeJSON(_ bytes: ByteBuffer, parser: JSONParser) -> ClientInfo? {
        guard let value = try? parser.parse(bytes.readableBytesView),
            let client = value["client"]?.stringValue, let user = value["user"]?.stringValue
        else { return nil }
        return ClientInfo(client: client, user: user, info: value["info"], meta: value["meta"])
    }

    /// `{"client":"…","user":"…"}` exactly, both strings printable ASCII without `"` or `\`; else nil.
    static func plain(_ bytes: UnsafeRawBufferPointer) -> ClientInfo? {
        var index = 0
        guard Self.skip(#"{"client":""#, in: bytes, at: &index), let client = Self.plainString(bytes, at: &index),
            Self.skip(#","user":""#, in: bytes, at: &index), let user = Self.plainString(bytes, at: &index),
            Self.skip(#"}"#, in: bytes, at: &index), index == bytes.count
        else { return nil }
        return ClientInfo(client: client, user: user)
    }

    /// Consumes `literal` (after the opening or closing quote handled by the caller) when it is next.
    private static func skip(_ literal: StaticString, in bytes: UnsafeRawBufferPointer, at index: inout Int) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - index >= count else { return false }
        let expected = UnsafeRawBufferPointer(start: literal.utf8Start, count: count)
        guard expected.elementsEqual(bytes[index..<(index + count)]) else { return false }
        index += count
        return true
    }

    /// The characters up to the closing quote (consumed), when all are printable ASCII other than `\`.
    private static func plainString(_ bytes: UnsafeRawBufferPointer, at index: inout Int) -> String? {
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let string = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                index += 1
                return string
            }
            guard byte >= 0x20, byte < 0x7F, byte != UInt8(ascii: "\\") else { return nil }
            index += 1
        }
        return nil
    }
}
