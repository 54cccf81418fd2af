public import NIOCore

/// Arguments of a command, written as RESP bulk strings as they are added.
///
/// For commands built on the hot path (every publish is an `EVALSHA` with a dozen arguments): no
/// array of arguments, and a key made of parts (`sb:{` + channel + `}:s`) is written from its parts
/// instead of first becoming a `String` of its own.
public struct RESPArgumentList: Sendable, Hashable {
    /// How many arguments were added.
    public private(set) var count = 0
    /// The arguments, encoded.
    public private(set) var bytes: ByteBuffer

    /// - Parameter capacity: bytes to reserve (the encoded size expected).
    public init(capacity: Int = 256) {
        self.bytes = ByteBufferAllocator().buffer(capacity: capacity)
    }

    public mutating func append(_ argument: RESPArgument) {
        self.bytes.writeRESPBulkString(argument)
        self.count += 1
    }

    /// One argument: `prefix`, `middle` and `suffix` together.
    public mutating func append(_ prefix: StaticString, _ middle: String, _ suffix: StaticString) {
        var middle = middle
        middle.withUTF8 { middle in
            _ = self.bytes.writeRESPBulk(
                UnsafeRawBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount),
                UnsafeRawBufferPointer(middle),
                UnsafeRawBufferPointer(start: suffix.utf8Start, count: suffix.utf8CodeUnitCount))
        }
        self.count += 1
    }
}

extension ByteBuffer {
    /// Writes a command whose first arguments are `head` and whose others are `tail`.
    ///
    /// - Returns: The number of bytes written.
    @discardableResult
    public mutating func writeRESPCommand(_ head: RESPArgument, _ second: RESPArgument, _ tail: RESPArgumentList) -> Int {
        var written = self.writeRESPLine(RESPType.array.rawValue, Int64(2 + tail.count))
        written += self.writeRESPBulkString(head)
        written += self.writeRESPBulkString(second)
        var bytes = tail.bytes
        return written + self.writeBuffer(&bytes)
    }
}
