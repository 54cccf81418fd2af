import NIOCore
import NIOTestUtils
import RESP
import Testing

@Suite("RESPTokenDecoder")
struct RESPTokenDecoderTests {
    /// One value of every type, from the Redis protocol specification, and some aggregates.
    static let examples = [
        "+OK\r\n", "+\r\n", "-ERR unknown command 'asdf'\r\n", ":0\r\n", ":-9223372036854775808\r\n",
        "$5\r\nhello\r\n", "$0\r\n\r\n", "$4\r\n\r\n\r\n\r\n", "$-1\r\n", "*-1\r\n", "_\r\n",
        "*0\r\n", "*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n", "*3\r\n:1\r\n:2\r\n:3\r\n",
        "*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Hello\r\n-World\r\n", "*3\r\n$5\r\nhello\r\n$-1\r\n$5\r\nworld\r\n",
        ",1.23\r\n", ",inf\r\n", ",-inf\r\n", ",nan\r\n", "#t\r\n", "#f\r\n",
        "(3492890328409238509324850943850943825024385\r\n", "!21\r\nSYNTAX invalid syntax\r\n",
        "=15\r\ntxt:Some string\r\n", "%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", "%0\r\n",
        "~5\r\n+orange\r\n+apple\r\n#t\r\n:100\r\n:999\r\n", ">3\r\n+message\r\n+chan\r\n$5\r\nhello\r\n",
        "|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n",
        "*3\r\n:1\r\n:2\r\n|1\r\n+ttl\r\n:3600\r\n:3\r\n", "*1\r\n%1\r\n~1\r\n>1\r\n|0\r\n*0\r\n*0\r\n",
        String(repeating: "*1\r\n", count: 32) + "_\r\n",
    ]

    @Test("ByteToMessageDecoderVerifier: whole, byte by byte, and many at once")
    func verifier() throws {
        var pairs = Self.examples.map { (ByteBuffer(string: $0), [token($0)]) }
        // One input holding two tokens: an attribute and the value it annotates.
        pairs.append((ByteBuffer(string: "|1\r\n+ttl\r\n:3600\r\n+OK\r\n"), [token("|1\r\n+ttl\r\n:3600\r\n"), token("+OK\r\n")]))
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs, decoderFactory: { RESPTokenDecoder() })
    }

    @Test("NIOSingleStepByteToMessageProcessor, in chunks of 1 to 7 bytes", arguments: 1...7)
    func processor(_ chunkSize: Int) throws {
        let wire = Array(Self.examples.joined().utf8)
        let processor = NIOSingleStepByteToMessageProcessor(RESPTokenDecoder())
        var tokens: [RESPToken] = []
        var start = 0
        while start < wire.count {
            let end = min(start + chunkSize, wire.count)
            try processor.process(buffer: ByteBuffer(bytes: wire[start..<end])) { tokens.append($0) }
            start = end
        }
        try processor.finishProcessing(seenEOF: true) { tokens.append($0) }
        #expect(tokens == Self.examples.map(token))
    }

    @Test("many tokens in one buffer come out one by one, each exactly its bytes")
    func manyTokensInOneBuffer() throws {
        let tokens = try decodeTokens(Self.examples.joined())
        #expect(tokens == Self.examples.map(token))
    }

    @Test("a truncated value returns nil, consumes nothing, and completes when the rest arrives")
    func truncated() throws {
        var decoder = RESPTokenDecoder()
        var buffer = ByteBuffer(string: "*2\r\n$5\r\nhel")
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(buffer.readableBytes == 11)
        buffer.writeString("lo\r\n:1")
        #expect(try decoder.decode(buffer: &buffer) == nil)
        buffer.writeString("\r")
        #expect(try decoder.decode(buffer: &buffer) == nil)
        buffer.writeString("\n+next")
        let first = try #require(try decoder.decode(buffer: &buffer))
        #expect(first == token("*2\r\n$5\r\nhello\r\n:1\r\n"))
        #expect(first.array?.map(\.value) == [.bulkString(ByteBuffer(string: "hello")), .integer(1)])
        #expect(try decoder.decode(buffer: &buffer) == nil)
        buffer.writeString("\r\n")
        #expect(try decoder.decode(buffer: &buffer) == token("+next\r\n"))
        #expect(buffer.readableBytes == 0)
    }

    @Test("split at every byte, a value waits and then completes", arguments: [
        "*3\r\n$5\r\nhello\r\n|1\r\n+ttl\r\n:3600\r\n%1\r\n=7\r\ntxt:abc\r\n,-1.5e3\r\n:-42\r\n",
        "!21\r\nSYNTAX invalid syntax\r\n", "(123456789012345678901234567890\r\n", "#t\r\n", "_\r\n",
    ])
    func everySplit(_ wire: String) throws {
        let bytes = Array(wire.utf8)
        for split in 0..<bytes.count {
            var decoder = RESPTokenDecoder()
            var buffer = ByteBuffer(bytes: bytes[..<split])
            #expect(try decoder.decode(buffer: &buffer) == nil, "split at \(split)")
            buffer.writeBytes(bytes[split...])
            #expect(try decoder.decode(buffer: &buffer) == token(wire), "split at \(split)")
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test("decodeLast emits complete values and leaves an incomplete one in the buffer")
    func decodeLast() throws {
        var decoder = RESPTokenDecoder()
        var buffer = ByteBuffer(string: "+OK\r\n$5\r\nhel")
        #expect(try decoder.decodeLast(buffer: &buffer, seenEOF: true) == token("+OK\r\n"))
        #expect(try decoder.decodeLast(buffer: &buffer, seenEOF: true) == nil)
        #expect(buffer.readableBytes == 7)
        var empty = ByteBuffer()
        var fresh = RESPTokenDecoder()
        #expect(try fresh.decodeLast(buffer: &empty, seenEOF: true) == nil)
    }

    // MARK: Malformed input

    @Test("malformed values throw the right code at the right offset", arguments: [
        ("?x\r\n", RESPDecodingError.Code.invalidType, 0),
        ("\r\n", .invalidType, 0),
        ("*1\r\n?\r\n", .invalidType, 4),
        ("$abc\r\n", .invalidLength, 0),
        ("$-2\r\n", .invalidLength, 0),
        ("*-2\r\n", .invalidLength, 0),
        ("%-1\r\n", .invalidLength, 0),
        ("~-1\r\n", .invalidLength, 0),
        ("!-1\r\n", .invalidLength, 0),
        ("$\r\n", .invalidLength, 0),
        ("$+3\r\n", .invalidLength, 0),
        ("$?\r\n", .invalidLength, 0),
        ("*?\r\n", .invalidLength, 0),
        ("$99999999999999999999\r\n", .invalidLength, 0),
        ("$3\r\nabcXY", .missingCRLF, 7),
        ("$3\r\nabc\rX", .missingCRLF, 8),
        ("*2\r\n$1\r\na\r\n$1\r\nbXY", .missingCRLF, 16),
        ("+OK\rX", .missingCRLF, 4),
        ("$3\rX", .missingCRLF, 3),
        ("_x\r\n", .missingCRLF, 1),
        (":12a\r\n", .invalidInteger, 0),
        (":12a", .invalidInteger, 0),
        (":99999999999999999999\r\n", .invalidInteger, 0),
        (":9223372036854775808\r\n", .invalidInteger, 0),
        (":000000000000000000001", .invalidInteger, 0),
        (":\r\n", .invalidInteger, 0),
        (":-\r\n", .invalidInteger, 0),
        (":1-2\r\n", .invalidInteger, 0),
        ("*1\r\n: 1\r\n", .invalidInteger, 4),
        ("(12x\r\n", .invalidInteger, 0),
        ("(\r\n", .invalidInteger, 0),
        (",1.2.3\r\n", .invalidDouble, 0),
        (",abc\r\n", .invalidDouble, 0),
        (",\r\n", .invalidDouble, 0),
        (",.\r\n", .invalidDouble, 0),
        (",1e\r\n", .invalidDouble, 0),
        (",infinity\r\n", .invalidDouble, 0),
        (",0x1p3\r\n", .invalidDouble, 0),
        ("#x\r\n", .invalidBoolean, 0),
        ("#\r\n", .invalidBoolean, 0),
        ("#tt\r\n", .invalidBoolean, 0),
        ("=3\r\ntxt\r\n", .invalidVerbatimString, 0),
        ("=5\r\ntxt-a\r\n", .invalidVerbatimString, 0),
    ])
    func malformed(_ wire: String, _ code: RESPDecodingError.Code, _ offset: Int) throws {
        let error = try #require(decodingError(wire))
        #expect(error.code == code)
        #expect(error.offset == offset)
    }

    @Test("after an error, decoding again throws the same error")
    func errorIsStable() throws {
        var decoder = RESPTokenDecoder()
        var buffer = ByteBuffer(string: "*2\r\n:1\r\n:x\r\n")
        let first = #expect(throws: RESPDecodingError.self) { try decoder.decode(buffer: &buffer) }
        let second = #expect(throws: RESPDecodingError.self) { try decoder.decode(buffer: &buffer) }
        #expect(first == RESPDecodingError(.invalidInteger, offset: 8))
        #expect(first == second)
        #expect(first?.description == "RESP decoding error at byte 8: invalid integer")
    }

    // MARK: Limits

    @Test("33 nested aggregates exceed the default depth, without waiting for the rest")
    func depthExceeded() throws {
        #expect(decodingError(String(repeating: "*1\r\n", count: 33)) == RESPDecodingError(.depthExceeded, offset: 128))
        #expect(decodingError(String(repeating: "*1\r\n", count: 33) + ":1\r\n")?.code == .depthExceeded)
        #expect(decodingError(String(repeating: "*1\r\n", count: 32) + "*0\r\n")?.code == .depthExceeded)
        #expect(decodingError(String(repeating: "*1\r\n", count: 32) + ":1\r\n") == nil)
    }

    @Test("every aggregate type counts toward the depth")
    func depthCountsEveryAggregate() throws {
        let limits = RESPLimits(maximumDepth: 4)
        #expect(try decodeTokens("*1\r\n~1\r\n>1\r\n%1\r\n+k\r\n+v\r\n", limits: limits).count == 1)
        #expect(decodingError("*1\r\n~1\r\n>1\r\n%1\r\n|0\r\n+k\r\n+v\r\n", limits: limits) == RESPDecodingError(.depthExceeded, offset: 16))
        #expect(decodingError("*1\r\n~1\r\n>1\r\n%1\r\n+k\r\n*0\r\n", limits: limits) == RESPDecodingError(.depthExceeded, offset: 20))
    }

    @Test("a bulk length above the limit fails at the header, before the payload arrives")
    func bulkTooLong() throws {
        #expect(decodingError("$67108865\r\n") == RESPDecodingError(.bulkTooLong, offset: 0))
        #expect(decodingError("$67108864\r\n") == nil)  // at the limit: waits for the payload

        let limits = RESPLimits(maximumBulkLength: 10)
        #expect(decodingError("*2\r\n$1\r\na\r\n$11\r\n", limits: limits) == RESPDecodingError(.bulkTooLong, offset: 11))
        #expect(decodingError("!11\r\n", limits: limits)?.code == .bulkTooLong)
        #expect(decodingError("=11\r\n", limits: limits)?.code == .bulkTooLong)
        #expect(try decodeTokens("$10\r\n0123456789\r\n", limits: limits).count == 1)
    }

    @Test("an aggregate count above the limit fails at the header", arguments: ["*", "~", ">", "%", "|"])
    func aggregateTooLarge(_ type: String) throws {
        #expect(decodingError("\(type)1048577\r\n") == RESPDecodingError(.aggregateTooLarge, offset: 0))
        #expect(decodingError("\(type)1048576\r\n") == nil)  // at the limit: waits for the elements
        let limits = RESPLimits(maximumAggregateCount: 2)
        #expect(decodingError("*1\r\n\(type)3\r\n", limits: limits) == RESPDecodingError(.aggregateTooLarge, offset: 4))
    }

    @Test("attributes among an aggregate's elements count toward the aggregate limit")
    func attributesAreCounted() throws {
        let limits = RESPLimits(maximumAggregateCount: 2)
        #expect(try decodeTokens("*1\r\n|0\r\n|0\r\n:1\r\n", limits: limits).count == 1)
        #expect(decodingError("*1\r\n|0\r\n|0\r\n|0\r\n", limits: limits) == RESPDecodingError(.aggregateTooLarge, offset: 12))
    }

    @Test("a simple line longer than the limit fails before its CRLF arrives")
    func lineTooLong() throws {
        let limit = RESPLimits().maximumSimpleLength
        #expect(decodingError("+" + String(repeating: "a", count: limit + 1)) == RESPDecodingError(.lineTooLong, offset: limit + 1))
        #expect(decodingError("+" + String(repeating: "a", count: limit)) == nil)  // at the limit: waits
        #expect(try decodeToken("+" + String(repeating: "a", count: limit) + "\r\n").string?.utf8.count == limit)

        let limits = RESPLimits(maximumSimpleLength: 4)
        for type in ["-", ",", "(", "+"] {
            #expect(decodingError("\(type)12345", limits: limits) == RESPDecodingError(.lineTooLong, offset: 5))
            #expect(decodingError("\(type)1234\r\n", limits: limits) == nil)
        }
    }

    // MARK: Trickled input

    /// Feeds `wire` to a decoder one byte at a time: each call sees one byte more than the last.
    /// (The bytes are revealed by moving the writer index, which is what appending does, minus the
    /// cost of a copy per byte in a debug build.)
    func decodeByteByByte(_ wire: ByteBuffer) throws -> [RESPToken] {
        var decoder = RESPTokenDecoder()
        var buffer = wire
        let end = buffer.writerIndex
        buffer.moveWriterIndex(to: buffer.readerIndex)
        var tokens: [RESPToken] = []
        while buffer.writerIndex < end {
            buffer.moveWriterIndex(forwardBy: 1)
            if let token = try decoder.decode(buffer: &buffer) {
                tokens.append(token)
            }
        }
        #expect(buffer.readableBytes == 0)
        return tokens
    }

    @Test("a 1 MB bulk string fed one byte at a time decodes")
    func trickledBulkString() throws {
        let length = 1 << 20
        var wire = ByteBuffer(string: "$\(length)\r\n")
        let header = wire.readableBytes
        let pattern = (0..<251).map { UInt8($0) }  // a prime length, so no power-of-two period
        while wire.readableBytes - header < length {
            wire.writeBytes(pattern.prefix(length - (wire.readableBytes - header)))
        }
        wire.writeString("\r\n")

        let tokens = try self.decodeByteByByte(wire)
        try #require(tokens.count == 1)
        #expect(tokens[0].bytes == wire.getSlice(at: header, length: length))
    }

    @Test("an array of 20,000 elements fed one byte at a time decodes")
    func trickledArray() throws {
        let count = 20_000
        let wire = ByteBuffer(string: "*\(count)\r\n" + String(repeating: ":12345\r\n", count: count) + "+next\r\n")
        let tokens = try self.decodeByteByByte(wire)
        try #require(tokens.count == 2)
        let elements = try #require(tokens[0].array)
        #expect(elements.count == count)
        #expect(elements.allSatisfy { $0.int64 == 12345 })
        #expect(tokens[1].string == "next")
    }

    @Test("a long simple string fed one byte at a time decodes")
    func trickledSimpleString() throws {
        let text = String(repeating: "abcdefgh", count: 8 * 1024)  // the 64 KB limit
        let tokens = try self.decodeByteByByte(ByteBuffer(string: "+\(text)\r\n"))
        #expect(tokens.map(\.string) == [text])
    }
}
