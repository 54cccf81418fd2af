// The RESP module: a Redis protocol (RESP2 and RESP3) codec with no I/O.
//
// - `RESPTokenDecoder` splits a byte stream into `RESPToken`s. Each token is validated completely,
//   nested aggregates included, within `RESPLimits`, before it is emitted; a truncated value waits
//   for more bytes and a hostile one fails fast with a `RESPDecodingError`.
// - `RESPToken` keeps a value as the bytes it came in and decodes it one level at a time
//   (`value`, or the conveniences `string`, `int64`, `array`, `errorMessage`, ...).
// - `ByteBuffer.writeRESPCommand(_:)` writes a command as a RESP array of bulk strings.
//
// Attributes (`|`, RESP3) are handled this way: an attribute at the top level of the stream is
// emitted as its own token, whose value is `.attribute(map)`, followed by the token it annotates;
// an attribute inside an aggregate is validated (and counts toward the limits) but is not an
// element: `RESPToken.Array` and `RESPToken.Map` skip it and their `count` excludes it, as the
// protocol says.
//
// Streamed strings and aggregates (`$?`, `*?`) are not supported (no Redis server sends them
// unasked) and are refused as `invalidLength`.

public import NIOCore

/// One validated RESP2/RESP3 value, kept as the bytes it came in (decoded lazily on access).
///
/// Two tokens are equal when their bytes are equal.
public struct RESPToken: Hashable, Sendable {
    /// Exactly the bytes of this value, from its type byte through its final CRLF.
    public let base: ByteBuffer

    /// Wraps bytes that hold exactly one valid RESP value, as `RESPTokenDecoder` emits them.
    ///
    /// The bytes are not checked again: reading `value` from bytes that are not one valid value
    /// stops the program.
    public init(validated: ByteBuffer) {
        self.base = validated
    }

    /// One RESP value, decoded one level: aggregates hold their elements as tokens.
    public enum Value: Hashable, Sendable {
        /// `+OK`.
        case simpleString(ByteBuffer)
        /// `-ERR message`; the payload is the text after `-`.
        case simpleError(ByteBuffer)
        /// `$5\r\nhello`.
        case bulkString(ByteBuffer)
        /// RESP3 `!21\r\nSYNTAX invalid syntax`.
        case bulkError(ByteBuffer)
        /// RESP3 `=15\r\ntxt:Some string`: the payload without the 3-letter format and `:`.
        case verbatimString(ByteBuffer)
        /// `:1000`.
        case integer(Int64)
        /// RESP3 `,1.23`, also `inf`, `-inf` and `nan`.
        case double(Double)
        /// RESP3 `#t` and `#f`.
        case boolean(Bool)
        /// RESP3 `(3492890328409238509324850943850943825024385`: the digits, with any sign.
        case bigNumber(ByteBuffer)
        /// RESP2 `$-1` and `*-1`, RESP3 `_`.
        case null
        /// `*2\r\n...`.
        case array(RESPToken.Array)
        /// RESP3 `~2\r\n...`.
        case set(RESPToken.Array)
        /// RESP3 `>3\r\n...`: out-of-band data such as Pub/Sub messages.
        case push(RESPToken.Array)
        /// RESP3 `%2\r\n...`.
        case map(RESPToken.Map)
        /// RESP3 `|1\r\n...`: metadata about the token that follows it.
        case attribute(RESPToken.Map)
    }

    /// This value, decoded one level.
    public var value: Value {
        self.base.withUnsafeReadableBytes { bytes in
            guard let first = bytes.first, let type = RESPType(rawValue: first) else {
                preconditionFailure("RESPToken(validated:) was given bytes that do not start with a RESP type")
            }
            let lineEnd = RESPSyntax.lineEnd(bytes, from: 1)
            let content = 1..<lineEnd
            let next = lineEnd + 2
            switch type {
            case .simpleString:
                return .simpleString(self.slice(content))
            case .simpleError:
                return .simpleError(self.slice(content))
            case .integer:
                return .integer(RESPSyntax.validatedInteger(bytes, content))
            case .double:
                guard let double = RESPSyntax.double(bytes, content) else {
                    preconditionFailure("RESPToken(validated:) was given an invalid double")
                }
                return .double(double)
            case .boolean:
                return .boolean(bytes[1] == UInt8(ascii: "t"))
            case .bigNumber:
                return .bigNumber(self.slice(content))
            case .null:
                return .null
            case .bulkString, .bulkError, .verbatimString:
                let length = RESPSyntax.validatedLength(bytes, content)
                guard length >= 0 else { return .null }
                precondition(bytes.count - next >= length, "RESPToken(validated:) was given a truncated bulk string")
                switch type {
                case .bulkString:
                    return .bulkString(self.slice(next..<next + length))
                case .bulkError:
                    return .bulkError(self.slice(next..<next + length))
                default:
                    return .verbatimString(self.slice(next + 4..<next + length))
                }
            case .array, .set, .push, .map, .attribute:
                let count = RESPSyntax.validatedLength(bytes, content)
                guard count >= 0 else { return .null }
                let elements = self.slice(next..<bytes.count)
                switch type {
                case .array:
                    return .array(Array(count: count, elements: elements))
                case .set:
                    return .set(Array(count: count, elements: elements))
                case .push:
                    return .push(Array(count: count, elements: elements))
                case .map:
                    return .map(Map(count: count, elements: elements))
                default:
                    return .attribute(Map(count: count, elements: elements))
                }
            }
        }
    }

    /// The bytes of `range`, counted from the start of `base`.
    private func slice(_ range: Range<Int>) -> ByteBuffer {
        self.base.getSlice(at: self.base.readerIndex + range.lowerBound, length: range.count)!
    }
}

extension RESPToken: CustomStringConvertible {
    /// The wire bytes, with CR, LF and other non-printable bytes escaped: `RESPToken("+OK\r\n")`.
    public var description: String {
        var text = "RESPToken(\""
        for byte in self.base.readableBytesView {
            switch byte {
            case UInt8(ascii: "\r"): text += "\\r"
            case UInt8(ascii: "\n"): text += "\\n"
            case UInt8(ascii: "\""): text += "\\\""
            case UInt8(ascii: "\\"): text += "\\\\"
            case 0x20..<0x7F: text.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: false)
                text += byte < 0x10 ? "\\x0\(hex)" : "\\x\(hex)"
            }
        }
        return text + "\")"
    }
}
