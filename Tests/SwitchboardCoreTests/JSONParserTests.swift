import NIOCore
import SwitchboardCore
import Testing

@Suite("JSONParser")
struct JSONParserTests {
    let parser = JSONParser()

    func parse(_ text: String) throws -> JSONValue {
        try self.parser.parse(Array(text.utf8))
    }

    @Test("parses every kind of value and keeps number text")
    func values() throws {
        let value = try parse(#"{"a":[1,-2.5e3,true,false,null],"b":"x\ny\u00e9\ud83d\ude00","c":{},"big":12345678901234567890}"#)
        #expect(value["a"] == .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null]))
        #expect(value["b"] == .string("x\nyé😀"))
        #expect(value["c"] == .object(JSONObject()))
        #expect(value["big"] == .number("12345678901234567890"))
    }

    @Test("round-trips through the writer", arguments: [
        #"{"a":1,"b":[true,null,"q\"\\\/"],"c":{"d":-0.5}}"#,
        #"[]"#,
        #""\u0001\t""#,
        #"{"nested":[[[[{"x":"y"}]]]]}"#,
    ])
    func roundTrip(_ text: String) throws {
        let value = try parse(text)
        let written = value.jsonString
        #expect(try parse(written) == value)
    }

    @Test("refuses malformed documents", arguments: [
        "", "{", "}", "[1,]", "{\"a\":}", "{\"a\" 1}", "01", "1.", "-", "1e", "tru", "nul", "\"abc", "\"\\x\"",
        "\"\\ud800\"", "\"\\udc00x\"", "{\"a\":1}}", "[1 2]", "\"tab\there\"", "{1:2}", "NaN", "+1",
    ])
    func malformed(_ text: String) {
        #expect(throws: JSONParser.Error.self) { try self.parse(text) }
    }

    @Test("limits nesting depth")
    func depth() throws {
        let shallow = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        _ = try parse(shallow)
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(throws: JSONParser.Error.self) { try self.parse(deep) }
        let hostile = String(repeating: "[", count: 100_000)
        #expect(throws: JSONParser.Error.self) { try self.parse(hostile) }
    }

    @Test("limits the number of values")
    func valueCount() {
        let limited = JSONParser(maximumDepth: 8, maximumValues: 10)
        let text = "[" + Array(repeating: "1", count: 20).joined(separator: ",") + "]"
        #expect(throws: JSONParser.Error.self) { try limited.parse(Array(text.utf8)) }
    }

    @Test("parses newline-separated sequences")
    func sequence() throws {
        let values = try self.parser.parseSequence(Array("{\"id\":1}\n{\"id\":2}\n".utf8))
        #expect(values.count == 2)
        #expect(values[1]["id"] == .number("2"))
        #expect(try self.parser.parseSequence([UInt8]()).isEmpty)
    }

    @Test("writer escapes control characters, quotes and backslashes")
    func escaping() {
        var buffer = ByteBuffer()
        buffer.writeJSONString("a\"b\\c\u{01}\n")
        #expect(String(buffer: buffer) == #""a\"b\\c\u0001\n""#)
        // Strings that need no escaping are written whole (quotes, UTF-8 and DEL as they are).
        for plain in ["", "chat:room-1", "héllo ✓ \u{7F}", String(repeating: "x", count: 300)] {
            var written = ByteBuffer(string: "[")
            written.writeJSONString(plain)
            #expect(String(buffer: written) == "[\"" + plain + "\"")
        }
    }
}
