public import NIOCore

extension ByteBuffer {
    /// Writes a command as a RESP array of bulk strings straight into the buffer:
    /// `*N\r\n$len\r\n...\r\n`.
    ///
    /// - Returns: The number of bytes written.
    @discardableResult
    public mutating func writeRESPCommand(_ arguments: some Collection<RESPArgument>) -> Int {
        var written = self.writeInteger(RESPType.array.rawValue)
        written += self.writeRESPDecimal(arguments.count)
        written += self.writeStaticString("\r\n")
        for argument in arguments {
            written += self.writeRESPBulkString(argument)
        }
        return written
    }

    /// Writes a command as a RESP array of bulk strings straight into the buffer:
    /// `*N\r\n$len\r\n...\r\n`.
    ///
    /// - Returns: The number of bytes written.
    @discardableResult
    public mutating func writeRESPCommand(_ arguments: RESPArgument...) -> Int {
        self.writeRESPCommand(arguments)
    }

    private mutating func writeRESPBulkString(_ argument: RESPArgument) -> Int {
        var written = self.writeInteger(RESPType.bulkString.rawValue)
        switch argument {
        case .string(let string):
            written += self.writeRESPDecimal(string.utf8.count)
            written += self.writeStaticString("\r\n")
            written += self.writeString(string)
        case .bytes(let bytes):
            written += self.writeRESPDecimal(bytes.readableBytes)
            written += self.writeStaticString("\r\n")
            written += self.writeImmutableBuffer(bytes)
        case .integer(let integer):
            written += self.writeRESPDecimal(Self.decimalLength(of: integer))
            written += self.writeStaticString("\r\n")
            written += self.writeRESPDecimal(integer)
        case .double(let double):
            let string = "\(double)"
            written += self.writeRESPDecimal(string.utf8.count)
            written += self.writeStaticString("\r\n")
            written += self.writeString(string)
        }
        written += self.writeStaticString("\r\n")
        return written
    }

    /// Writes `value` in decimal ASCII, without allocating.
    private mutating func writeRESPDecimal(_ value: some FixedWidthInteger) -> Int {
        let length = Self.decimalLength(of: value)
        var magnitude = UInt64(value.magnitude)
        self.writeRepeatingByte(UInt8(ascii: "-"), count: length)
        var index = self.writerIndex
        repeat {
            index -= 1
            self.setInteger(UInt8(ascii: "0") + UInt8(magnitude % 10), at: index)
            magnitude /= 10
        } while magnitude > 0
        // Any byte not overwritten by a digit is the leading minus sign.
        return length
    }

    private static func decimalLength(of value: some FixedWidthInteger) -> Int {
        var magnitude = UInt64(value.magnitude)
        var length = value < 0 ? 2 : 1
        while magnitude >= 10 {
            magnitude /= 10
            length += 1
        }
        return length
    }
}
