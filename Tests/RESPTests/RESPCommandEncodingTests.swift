import NIOCore
import RESP
import Testing

@Suite("writeRESPCommand")
struct RESPCommandEncodingTests {
    func encoded(_ arguments: [RESPArgument]) -> (bytes: [UInt8], written: Int) {
        var buffer = ByteBuffer()
        let written = buffer.writeRESPCommand(arguments)
        return (Array(buffer.readableBytesView), written)
    }

    static let commands: [([RESPArgument], String)] = [
        (["SET", "k", "v"], "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
        (["PING"], "*1\r\n$4\r\nPING\r\n"),
        ([], "*0\r\n"),
        (["SET", "k", ""], "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"),
        (["SET", "clé", "ü"], "*3\r\n$3\r\nSET\r\n$4\r\nclé\r\n$2\r\nü\r\n"),
        (["SET", "k", .string(String(repeating: "x", count: 12_345))], "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$12345\r\n" + String(repeating: "x", count: 12_345) + "\r\n"),
        ([.bytes(ByteBuffer(repeating: 0x7A, count: 100))], "*1\r\n$100\r\n" + String(repeating: "z", count: 100) + "\r\n"),
        ([.string("EXPIRE"), .string("k"), .integer(60)], "*3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n60\r\n"),
        ([.integer(0), .integer(-1), .integer(1234567890)], "*3\r\n$1\r\n0\r\n$2\r\n-1\r\n$10\r\n1234567890\r\n"),
        ([.integer(.max), .integer(.min)], "*2\r\n$19\r\n9223372036854775807\r\n$20\r\n-9223372036854775808\r\n"),
        ([.double(1.5), .double(-0.25), .double(.infinity), .double(-.infinity)],
         "*4\r\n$3\r\n1.5\r\n$5\r\n-0.25\r\n$3\r\ninf\r\n$4\r\n-inf\r\n"),
    ]

    @Test("exact bytes", arguments: Self.commands)
    func exactBytes(_ arguments: [RESPArgument], _ expected: String) {
        let (bytes, written) = self.encoded(arguments)
        #expect(bytes == Array(expected.utf8))
        #expect(written == bytes.count)
    }

    @Test("binary payloads are written as is, with their length")
    func binary() {
        let payload: [UInt8] = [0x00, 0x0D, 0x0A, 0xFF, 0x24, 0x2A]
        let (bytes, written) = self.encoded([.string("SET"), .string("k"), .bytes(ByteBuffer(bytes: payload))])
        #expect(bytes == Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\n".utf8) + payload + Array("\r\n".utf8))
        #expect(written == bytes.count)
    }

    @Test("a ByteBuffer argument is written from its reader index")
    func bufferSlice() {
        var payload = ByteBuffer(string: "xxhello")
        payload.moveReaderIndex(forwardBy: 2)
        #expect(self.encoded([.bytes(payload)]).bytes == Array("*1\r\n$5\r\nhello\r\n".utf8))
    }

    @Test("appends to what the buffer holds and returns only the bytes it wrote")
    func appends() {
        var buffer = ByteBuffer(string: "before")
        let first = buffer.writeRESPCommand("GET", "a")
        let second = buffer.writeRESPCommand(["GET", "bb"] as [RESPArgument])
        #expect(first == 20)
        #expect(second == 21)
        #expect(String(buffer: buffer) == "before*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$2\r\nbb\r\n")
    }

    @Test("the variadic form writes what the collection form writes")
    func variadic() {
        var variadic = ByteBuffer()
        variadic.writeRESPCommand("HSET", "h", .integer(-7), .double(0.5), .bytes(ByteBuffer(string: "v")))
        var collection = ByteBuffer()
        collection.writeRESPCommand(["HSET", "h", .integer(-7), .double(0.5), .bytes(ByteBuffer(string: "v"))] as [RESPArgument])
        #expect(variadic == collection)
    }

    @Test("round trip: an encoded command decodes as an array of its arguments")
    func roundTrip() throws {
        let payload = ByteBuffer(bytes: (0...255).map { UInt8($0) })
        var buffer = ByteBuffer()
        let written = buffer.writeRESPCommand(
            .string("EVALSHA"), .string("é\r\n"), .integer(.min), .double(-1.25e-7), .bytes(payload), .string("")
        )
        #expect(written == buffer.readableBytes)
        let tokens = try decodeTokens(buffer)
        try #require(tokens.count == 1)
        #expect(tokens[0].base == buffer)
        let arguments = try #require(tokens[0].array)
        try #require(arguments.count == 6)
        #expect(arguments.allSatisfy { if case .bulkString = $0.value { true } else { false } })
        #expect(arguments[0].string == "EVALSHA")
        #expect(arguments[1].string == "é\r\n")
        #expect(arguments[2].int64 == .min)
        #expect(arguments[3].string.flatMap(Double.init) == -1.25e-7)
        #expect(arguments[4].bytes == payload)
        #expect(arguments[5].string == "")
    }

    @Test("an argument list writes the bytes the array form writes, every command of the table", arguments: Self.commands.filter { $0.0.count >= 2 })
    func argumentList(_ arguments: [RESPArgument], _ expected: String) {
        var tail = RESPArgumentList(capacity: 8)
        for argument in arguments.dropFirst(2) { tail.append(argument) }
        var buffer = ByteBuffer(string: "before")
        let written = buffer.writeRESPCommand(arguments[0], arguments[1], tail)
        #expect(String(buffer: buffer) == "before" + expected)
        #expect(written == expected.utf8.count)
        #expect(tail.count == arguments.count - 2)
    }

    @Test("an argument from parts is one bulk string of the parts together, whatever the middle holds")
    func argumentFromParts() {
        var tail = RESPArgumentList()
        tail.append("sb:{", "chat:clé", "}:s")
        tail.append("sb:c:", "", "")
        tail.append("", "a\r\nb", "")
        var buffer = ByteBuffer()
        buffer.writeRESPCommand("EVALSHA", "x", tail)
        #expect(String(buffer: buffer) == "*5\r\n$7\r\nEVALSHA\r\n$1\r\nx\r\n$16\r\nsb:{chat:clé}:s\r\n$5\r\nsb:c:\r\n$4\r\na\r\nb\r\n")
    }
}
