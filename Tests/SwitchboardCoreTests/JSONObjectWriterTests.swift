import NIOCore
import SwitchboardCore
import Testing

@Suite("JSONObjectWriter")
struct JSONObjectWriterTests {
    func written(_ body: (inout JSONObjectWriter) -> Void) -> String {
        var buffer = ByteBuffer()
        buffer.writeJSONObject(body)
        return String(buffer: buffer)
    }

    @Test("integers are written as Swift spells them, at both ends of every width")
    func decimals() {
        func decimal(_ value: some BinaryInteger) -> String {
            var buffer = ByteBuffer()
            buffer.writeDecimal(value)
            return String(buffer: buffer)
        }
        for value: Int64 in [0, 7, 9, 10, 99, 100, -1, -10, 1_234_567_890_123, .max, .min] {
            #expect(decimal(value) == String(value))
        }
        for value: UInt64 in [0, 1, 10_000_000_000_000_000_000, .max] { #expect(decimal(value) == String(value)) }
        #expect(decimal(Int8.min) == "-128")
        #expect(decimal(UInt32.max) == "4294967295")
    }

    @Test("commas go between members only, at every level")
    func commas() {
        #expect(self.written { _ in } == "{}")
        #expect(self.written { $0.field("a", int: 1) } == #"{"a":1}"#)
        let text = self.written { o in
            o.field("s", string: "x")
            o.field("n", int: -3)
            o.field("big", int: UInt64.max)
            o.field("t", bool: true)
            o.field("f", bool: false)
            o.object("empty") { _ in }
            o.array("none") { _ in }
            o.object("nested") { n in
                n.field("a", int: 1)
                n.array("list") { l in
                    l.element(int: 1)
                    l.element(string: "two")
                    l.element(bool: false)
                    l.object { $0.field("k", json: .null) }
                    l.array { $0.element(json: .number("1e400")) }
                    l.element { $0.writeStaticString("[]") }
                }
            }
        }
        #expect(text == #"{"s":"x","n":-3,"big":18446744073709551615,"t":true,"f":false,"empty":{},"none":[],"nested":{"a":1,"list":[1,"two",false,{"k":null},[1e400],[]]}}"#)
        #expect((try? JSONParser().parse(Array(text.utf8))) != nil)
    }

    @Test("keys and strings are escaped")
    func escaping() throws {
        let key = "a\"b\\c\n\u{01}"
        let text = self.written { o in
            o.field(key, string: key)
            o.object(key) { $0.field(key, int: 1) }
        }
        let value = try JSONParser().parse(Array(text.utf8))
        #expect(value[key] == .object(JSONObject([(key, .number("1"))])))
        #expect(value.objectValue?.members.first?.value == .string(key))
    }

    @Test("raw and pre-encoded values are written as they are")
    func rawValues() throws {
        let data = try RawJSON(validating: Array(#"{ "z" : 1e400 , "a":"\u00e9" }"#.utf8))
        let text = self.written { o in
            o.field("data", raw: data)
            o.field("pub") { $0.writePublication(Publication(offset: 2, data: data.bytes)) }
        }
        #expect(text == #"{"data":{ "z" : 1e400 , "a":"\u00e9" },"pub":{"offset":2,"data":{ "z" : 1e400 , "a":"\u00e9" }}}"#)
    }

    @Test("appends after what the buffer holds and keeps its reader index (header room)")
    func appends() {
        var buffer = ByteBuffer(string: "HEAD")
        buffer.moveReaderIndex(forwardBy: 2)
        buffer.writeJSONObject { $0.field("a", int: 1) }
        buffer.writeJSONArray { $0.element(int: 2) }
        #expect(String(buffer: buffer) == #"AD{"a":1}[2]"#)
    }

    @Test("the buffer is not copied: a large reply writes into the caller's storage")
    func noCopy() {
        var buffer = ByteBufferAllocator().buffer(capacity: 4096)
        let before = buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        buffer.writeJSONObject { o in
            for i in 0..<50 { o.object("k\(i)") { $0.field("v", int: i) } }
        }
        let after = buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        #expect(before == after)
        #expect(buffer.readableBytes < 4096)
    }
}
