public import NIOCore

/// An argument of a command, written as a bulk string.
public enum RESPArgument: Hashable, Sendable, ExpressibleByStringLiteral {
    /// Written as its UTF-8 bytes.
    case string(String)
    /// Written as is; may hold any bytes.
    case bytes(ByteBuffer)
    /// Written in decimal.
    case integer(Int64)
    /// Written as Swift prints it (`1.5`, `1e-05`, `inf`, `-inf`), which Redis parses.
    case double(Double)

    public init(stringLiteral value: String) {
        self = .string(value)
    }
}
