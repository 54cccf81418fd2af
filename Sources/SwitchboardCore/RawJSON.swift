public import NIOCore

/// A JSON value carried as its source text: checked once where it enters the server (by
/// `JSONParser`, with the parser's limits), then passed on and written as bytes, never built
/// into a `JSONValue` tree and encoded back. `publish.data` travels this way from the command to
/// the broker, history and every subscriber.
///
/// The bytes are the value exactly as the client wrote it (whitespace, escapes such as `\u00e9`,
/// number spellings such as `1e400`, member order, duplicate members) with one exception: a line
/// break between tokens becomes a space. The protocol separates objects with `\n` (several in a
/// WebSocket frame, one per SSE `data:` line), so a payload may hold none; JSON strings cannot
/// hold a raw line break, so the change is only ever to insignificant whitespace, and the length
/// stays the same.
///
/// Every `RawJSON` is valid: the only ways to make one validate (`init(validating:)`, the parser)
/// or encode a tree (`init(_:)`).
public struct RawJSON: Sendable, Hashable {
    /// The value's JSON text, exactly one value without surrounding whitespace.
    public let bytes: ByteBuffer

    /// Copies bytes the parser has just checked. The copy is sized to the value, so neither a
    /// history entry nor a queued delivery keeps the (larger) frame or body it came in alive.
    init(validated source: UnsafeBufferPointer<UInt8>) {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(source.count)
        buffer.writeBytes(source)
        if source.contains(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) {
            buffer.withUnsafeMutableReadableBytes { bytes in
                for i in bytes.indices where bytes[i] == UInt8(ascii: "\n") || bytes[i] == UInt8(ascii: "\r") {
                    bytes[i] = UInt8(ascii: " ")
                }
            }
        }
        self.bytes = buffer
    }

    /// Checks that `text` is exactly one JSON value (surrounding whitespace allowed and dropped)
    /// by `parser`'s rules and limits, and keeps its bytes.
    public init(validating text: some Collection<UInt8>, parser: JSONParser = JSONParser()) throws(JSONParser.Error) {
        let result: Result<RawJSON, JSONParser.Error> =
            text.withContiguousStorageIfAvailable { buffer in
                Self.validate(buffer, parser: parser)
            } ?? Array(text).withUnsafeBufferPointer { buffer in
                Self.validate(buffer, parser: parser)
            }
        self = try result.get()
    }

    private static func validate(_ buffer: UnsafeBufferPointer<UInt8>, parser: JSONParser) -> Result<RawJSON, JSONParser.Error> {
        do {
            let range = try parser.validateOne(buffer)
            return .success(RawJSON(validated: UnsafeBufferPointer(rebasing: buffer[range])))
        } catch {
            return .failure(error)
        }
    }

    /// The text of `value`: the bytes themselves for a raw value, compact JSON for a tree built in code.
    public init(_ value: JSONValue) {
        if case .raw(let raw) = value {
            self = raw
        } else {
            self.bytes = value.jsonBytes
        }
    }

    /// The JSON text as a string.
    public var text: String { String(buffer: self.bytes) }
}
