public import NIOCore

extension RESPToken {
    /// The payload of a simple, bulk or verbatim string as UTF-8 (invalid bytes are replaced).
    public var string: String? {
        self.bytes.map { String(buffer: $0) }
    }

    /// The payload of a simple, bulk or verbatim string.
    public var bytes: ByteBuffer? {
        switch self.value {
        case .simpleString(let bytes), .bulkString(let bytes), .verbatimString(let bytes):
            bytes
        default:
            nil
        }
    }

    /// An integer, or a simple or bulk string holding a decimal integer (`[+|-]digits`) that
    /// fits an `Int64`, as many commands reply with.
    public var int64: Int64? {
        switch self.value {
        case .integer(let value):
            value
        case .simpleString(let bytes), .bulkString(let bytes):
            bytes.withUnsafeReadableBytes { RESPSyntax.integer($0, 0..<$0.count) }
        default:
            nil
        }
    }

    /// The elements of an array, set or push.
    public var array: [RESPToken]? {
        switch self.value {
        case .array(let elements), .set(let elements), .push(let elements):
            Swift.Array(elements)
        default:
            nil
        }
    }

    /// The text of a simple or bulk error, such as `NOSCRIPT No matching script`.
    public var errorMessage: String? {
        switch self.value {
        case .simpleError(let bytes), .bulkError(let bytes):
            String(buffer: bytes)
        default:
            nil
        }
    }

    /// Whether this is RESP2 `$-1` or `*-1`, or RESP3 `_`.
    public var isNull: Bool {
        if case .null = self.value {
            return true
        }
        return false
    }
}
