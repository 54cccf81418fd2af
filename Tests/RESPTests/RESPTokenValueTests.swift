import NIOCore
import RESP
import Testing

@Suite("RESPToken values")
struct RESPTokenValueTests {
    // MARK: RESP2

    @Test("simple string")
    func simpleString() throws {
        let token = try decodeToken("+OK\r\n")
        #expect(token.value == .simpleString(ByteBuffer(string: "OK")))
        #expect(token.string == "OK")
        #expect(token.bytes == ByteBuffer(string: "OK"))
        #expect(token.errorMessage == nil)
        #expect(!token.isNull)
        #expect(token.base == ByteBuffer(string: "+OK\r\n"))
    }

    @Test("empty simple string")
    func emptySimpleString() throws {
        #expect(try decodeToken("+\r\n").string == "")
    }

    @Test("simple error")
    func simpleError() throws {
        let token = try decodeToken("-ERR unknown command 'asdf'\r\n")
        #expect(token.value == .simpleError(ByteBuffer(string: "ERR unknown command 'asdf'")))
        #expect(token.errorMessage == "ERR unknown command 'asdf'")
        #expect(token.string == nil)
        #expect(try decodeToken("-NOSCRIPT No matching script\r\n").errorMessage == "NOSCRIPT No matching script")
    }

    @Test("integers", arguments: [
        (":0\r\n", Int64(0)), (":1000\r\n", 1000), (":-42\r\n", -42), (":+7\r\n", 7),
        (":9223372036854775807\r\n", .max), (":-9223372036854775808\r\n", .min),
    ])
    func integer(_ wire: String, _ expected: Int64) throws {
        let token = try decodeToken(wire)
        #expect(token.value == .integer(expected))
        #expect(token.int64 == expected)
        #expect(token.string == nil)
    }

    @Test("bulk strings")
    func bulkString() throws {
        let hello = try decodeToken("$5\r\nhello\r\n")
        #expect(hello.value == .bulkString(ByteBuffer(string: "hello")))
        #expect(hello.string == "hello")

        let empty = try decodeToken("$0\r\n\r\n")
        #expect(empty.value == .bulkString(ByteBuffer()))
        #expect(empty.string == "")
        #expect(!empty.isNull)

        // A bulk string may hold CRLF and any byte; its length says where it ends.
        let binary = try decodeTokens(ByteBuffer(bytes: Array("$6\r\n".utf8) + [0x00, 0x0D, 0x0A, 0xFF, 0x2B, 0x24] + [0x0D, 0x0A]))
        try #require(binary.count == 1)
        #expect(binary[0].bytes == ByteBuffer(bytes: [0x00, 0x0D, 0x0A, 0xFF, 0x2B, 0x24]))
    }

    @Test("nulls", arguments: ["$-1\r\n", "*-1\r\n", "_\r\n"])
    func null(_ wire: String) throws {
        let token = try decodeToken(wire)
        #expect(token.value == .null)
        #expect(token.isNull)
        #expect(token.string == nil)
        #expect(token.array == nil)
        #expect(token.int64 == nil)
    }

    @Test("arrays")
    func arrays() throws {
        #expect(try decodeToken("*0\r\n").array == [])

        let words = try decodeToken("*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n")
        guard case .array(let elements) = words.value else {
            Issue.record("expected an array, got \(words.value)")
            return
        }
        #expect(elements.count == 2)
        #expect(elements.map(\.string) == ["hello", "world"])
        // Elements are exactly their own bytes.
        #expect(elements.map(\.base) == [ByteBuffer(string: "$5\r\nhello\r\n"), ByteBuffer(string: "$5\r\nworld\r\n")])

        let mixed = try #require(try decodeToken("*5\r\n:1\r\n:2\r\n:3\r\n:4\r\n$5\r\nhello\r\n").array)
        #expect(mixed.map(\.value) == [.integer(1), .integer(2), .integer(3), .integer(4), .bulkString(ByteBuffer(string: "hello"))])
    }

    @Test("nested arrays")
    func nestedArrays() throws {
        let outer = try #require(try decodeToken("*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Hello\r\n-World\r\n").array)
        #expect(outer.count == 2)
        #expect(try #require(outer[0].array).map(\.int64) == [1, 2, 3])
        let second = try #require(outer[1].array)
        #expect(second.map(\.value) == [.simpleString(ByteBuffer(string: "Hello")), .simpleError(ByteBuffer(string: "World"))])
    }

    @Test("null elements in an array")
    func nullElements() throws {
        let elements = try #require(try decodeToken("*3\r\n$5\r\nhello\r\n$-1\r\n$5\r\nworld\r\n").array)
        #expect(elements.map(\.isNull) == [false, true, false])
        #expect(elements.map(\.string) == ["hello", nil, "world"])
    }

    @Test("32 nested arrays are within the default depth")
    func deepNesting() throws {
        var token = try decodeToken(String(repeating: "*1\r\n", count: 32) + ":7\r\n")
        for _ in 0..<32 {
            let elements = try #require(token.array)
            try #require(elements.count == 1)
            token = elements[0]
        }
        #expect(token.int64 == 7)
    }

    // MARK: RESP3

    @Test("doubles", arguments: [
        (",1.23\r\n", 1.23), (",10\r\n", 10), (",-0.5\r\n", -0.5), (",1.5e3\r\n", 1500), (",2E-2\r\n", 0.02),
        (",+3\r\n", 3), (",inf\r\n", .infinity), (",-inf\r\n", -.infinity),
    ])
    func double(_ wire: String, _ expected: Double) throws {
        #expect(try decodeToken(wire).value == .double(expected))
    }

    @Test("nan")
    func nan() throws {
        guard case .double(let value) = try decodeToken(",nan\r\n").value else {
            Issue.record("expected a double")
            return
        }
        #expect(value.isNaN)
    }

    @Test("booleans")
    func booleans() throws {
        #expect(try decodeToken("#t\r\n").value == .boolean(true))
        #expect(try decodeToken("#f\r\n").value == .boolean(false))
    }

    @Test("big number")
    func bigNumber() throws {
        let token = try decodeToken("(3492890328409238509324850943850943825024385\r\n")
        #expect(token.value == .bigNumber(ByteBuffer(string: "3492890328409238509324850943850943825024385")))
        #expect(try decodeToken("(-12\r\n").value == .bigNumber(ByteBuffer(string: "-12")))
    }

    @Test("bulk error")
    func bulkError() throws {
        let token = try decodeToken("!21\r\nSYNTAX invalid syntax\r\n")
        #expect(token.value == .bulkError(ByteBuffer(string: "SYNTAX invalid syntax")))
        #expect(token.errorMessage == "SYNTAX invalid syntax")
        #expect(token.string == nil)
    }

    @Test("verbatim string")
    func verbatimString() throws {
        let token = try decodeToken("=15\r\ntxt:Some string\r\n")
        #expect(token.value == .verbatimString(ByteBuffer(string: "Some string")))
        #expect(token.string == "Some string")
        #expect(try decodeToken("=4\r\nmkd:\r\n").string == "")
    }

    @Test("map")
    func map() throws {
        let token = try decodeToken("%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n")
        guard case .map(let map) = token.value else {
            Issue.record("expected a map, got \(token.value)")
            return
        }
        #expect(map.count == 2)
        let entries = map.map { ($0.key.string, $0.value.int64) }
        #expect(entries.map(\.0) == ["first", "second"])
        #expect(entries.map(\.1) == [1, 2])
        #expect(token.array == nil)
        guard case .map(let empty) = try decodeToken("%0\r\n").value else {
            Issue.record("expected an empty map")
            return
        }
        #expect(empty.count == 0)
        #expect(Array(empty).isEmpty)
    }

    @Test("maps and arrays nest in each other")
    func mapsInArrays() throws {
        let token = try decodeToken("*2\r\n%1\r\n+a\r\n*2\r\n:1\r\n:2\r\n:3\r\n")
        let elements = try #require(token.array)
        try #require(elements.count == 2)
        guard case .map(let map) = elements[0].value else {
            Issue.record("expected a map, got \(elements[0].value)")
            return
        }
        let entries = Array(map)
        try #require(entries.count == 1)
        #expect(entries[0].key.string == "a")
        #expect(try #require(entries[0].value.array).map(\.int64) == [1, 2])
        #expect(elements[1].int64 == 3)
    }

    @Test("set")
    func set() throws {
        let token = try decodeToken("~5\r\n+orange\r\n+apple\r\n#t\r\n:100\r\n:999\r\n")
        guard case .set(let elements) = token.value else {
            Issue.record("expected a set, got \(token.value)")
            return
        }
        #expect(elements.count == 5)
        #expect(elements.map(\.value) == [
            .simpleString(ByteBuffer(string: "orange")), .simpleString(ByteBuffer(string: "apple")),
            .boolean(true), .integer(100), .integer(999),
        ])
        #expect(token.array?.count == 5)
    }

    @Test("push")
    func push() throws {
        let token = try decodeToken(">3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$5\r\nhello\r\n")
        guard case .push(let elements) = token.value else {
            Issue.record("expected a push, got \(token.value)")
            return
        }
        #expect(elements.map(\.string) == ["message", "chan", "hello"])
        #expect(token.array?.map(\.string) == ["message", "chan", "hello"])
    }

    @Test("an attribute at the top level is its own token, before the value it annotates")
    func topLevelAttribute() throws {
        let tokens = try decodeTokens(
            "|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n"
        )
        try #require(tokens.count == 2)
        guard case .attribute(let attribute) = tokens[0].value else {
            Issue.record("expected an attribute, got \(tokens[0].value)")
            return
        }
        let entries = Array(attribute)
        try #require(entries.count == 1)
        #expect(entries[0].key.string == "key-popularity")
        guard case .map(let popularity) = entries[0].value.value else {
            Issue.record("expected a map, got \(entries[0].value.value)")
            return
        }
        #expect(popularity.map(\.key.string) == ["a", "b"])
        #expect(popularity.map(\.value.value) == [.double(0.1923), .double(0.0012)])
        #expect(tokens[1].array?.map(\.int64) == [2039123, 9543892])
    }

    @Test("an attribute inside an aggregate is skipped and not counted")
    func nestedAttribute() throws {
        let token = try decodeToken("*3\r\n:1\r\n:2\r\n|1\r\n+ttl\r\n:3600\r\n:3\r\n")
        guard case .array(let elements) = token.value else {
            Issue.record("expected an array, got \(token.value)")
            return
        }
        #expect(elements.count == 3)
        #expect(elements.map(\.int64) == [1, 2, 3])
        #expect(elements.map(\.base).last == ByteBuffer(string: ":3\r\n"))

        let map = try decodeToken("%1\r\n|0\r\n+k\r\n|1\r\n+a\r\n*1\r\n|0\r\n:1\r\n+v\r\n")
        guard case .map(let entries) = map.value else {
            Issue.record("expected a map, got \(map.value)")
            return
        }
        #expect(entries.map(\.key.string) == ["k"])
        #expect(entries.map(\.value.string) == ["v"])
    }

    // MARK: Conveniences

    @Test("int64 reads integers held in simple and bulk strings")
    func int64FromStrings() throws {
        #expect(try decodeToken("$3\r\n123\r\n").int64 == 123)
        #expect(try decodeToken("+-12\r\n").int64 == -12)
        #expect(try decodeToken("$2\r\nab\r\n").int64 == nil)
        #expect(try decodeToken("$0\r\n\r\n").int64 == nil)
        #expect(try decodeToken("$20\r\n99999999999999999999\r\n").int64 == nil)
        #expect(try decodeToken(",1\r\n").int64 == nil)
        #expect(try decodeToken("-1\r\n").int64 == nil)
    }

    @Test("string is lossy UTF-8")
    func lossyString() throws {
        let tokens = try decodeTokens(ByteBuffer(bytes: Array("$2\r\n".utf8) + [0xC3, 0x28] + Array("\r\n".utf8)))
        try #require(tokens.count == 1)
        #expect(tokens[0].string == "\u{FFFD}(")
    }

    @Test("tokens are equal when their bytes are")
    func equality() throws {
        #expect(try decodeToken("+OK\r\n") == token("+OK\r\n"))
        #expect(try decodeToken("+OK\r\n") != token("$2\r\nOK\r\n"))
        #expect(Set([token("+a\r\n"), token("+a\r\n"), token("+b\r\n")]).count == 2)
        #expect(token("*1\r\n+a\r\n").description == #"RESPToken("*1\r\n+a\r\n")"#)
    }
}
