import NIOCore
import SwitchboardCore
import Testing

/// `publish.data` is validated where it enters and then carried as the bytes the client sent.
@Suite("RawJSON")
struct RawJSONTests {
    /// A parser that keeps the top-level object's `data` raw, and one that builds everything.
    let raw = JSONParser(maximumDepth: 16, maximumValues: 1_000, rawMembers: [.init(key: "data", depth: 1)])
    let tree = JSONParser(maximumDepth: 16, maximumValues: 1_000)

    func rawData(_ data: String) throws -> String {
        let value = try self.raw.parse(Array(#"{"channel":"c","data":\#(data)}"#.utf8))
        guard case .raw(let bytes) = value["data"] else {
            Issue.record("data was not kept raw: \(String(describing: value["data"]))")
            return ""
        }
        return bytes.text
    }

    @Test("data keeps whitespace, escapes, number spellings, member order and duplicates", arguments: [
        #"{ "b" : 1 ,  "a" :[ 2 ,3 ] }"#,
        #""caf\u00e9 \ud83d\ude00 \/ \"q\"""#,
        "1e400", "-0.0E-0", "12345678901234567890", "123456789012345678901234567890.5",
        #"{"z":1,"a":2,"z":3}"#,
        "\t[\t{}\t,\t[]\t]",
        #""é😀""#,
        "null", "true", #""""#,
    ])
    func bytesKept(_ data: String) throws {
        #expect(try self.rawData(data) == data.trimmingWhitespace)
    }

    @Test("line breaks between tokens become spaces (objects are newline-separated on the wire)")
    func lineBreaks() throws {
        #expect(try self.rawData("{\n\"a\":\r\n[1,\n2]\n}") == "{ \"a\":  [1, 2] }")
        // Escaped line breaks inside strings are text, not whitespace: kept.
        #expect(try self.rawData(#""a\nb\r""#) == #""a\nb\r""#)
    }

    @Test("leading and trailing whitespace around the value is not part of it")
    func surroundingWhitespace() throws {
        let value = try self.raw.parse(Array("{\"data\" :  [1] \t ,\"x\":1}".utf8))
        #expect(value["data"] == .raw(try RawJSON(validating: Array("[1]".utf8))))
    }

    @Test("only the named member at the named depth is kept raw")
    func onlyTheRule() throws {
        let value = try self.raw.parse(Array(#"{"x":{"data":[1]},"data":{"data":[2]}}"#.utf8))
        #expect(value["x"] == .object(JSONObject([("data", .array([.number("1")]))])))
        guard case .raw(let data) = value["data"] else {
            Issue.record("top-level data not raw")
            return
        }
        #expect(data.text == #"{"data":[2]}"#)
    }

    @Test("a raw value is written back byte for byte")
    func writer() throws {
        let value = try self.raw.parse(Array(#"{"data": { "n" : 1e400 }}"#.utf8))
        #expect(value.jsonString == #"{"data":{ "n" : 1e400 }}"#)
        #expect(RawJSON(value["data"]!).text == #"{ "n" : 1e400 }"#)
        // A tree built in code becomes compact text.
        #expect(RawJSON(.array([.number("1"), .string("x")])).text == #"[1,"x"]"#)
    }

    /// Documents in and around every rule of the grammar and both limits.
    static let corpus: [String] = {
        var texts = [
            "", " ", "{", "}", "[1,]", "{\"a\":}", "{\"a\" 1}", "01", "1.", "-", "1e", "1e+", "tru", "nul", "fals", "\"abc",
            "\"\\x\"", "\"\\ud800\"", "\"\\ud800\\u0041\"", "\"\\udc00x\"", "\"\\u12\"", "\"\\u12G4\"", "[1 2]",
            "\"tab\there\"", "{1:2}", "NaN", "+1", "[", "[[", "{\"a\"", "{\"a\":1", "{\"a\":1,", "{\"a\":1,}", "\"\\",
            "1 2", "[] []", "{\"a\":1}}", "\"\u{7f}\"", "-01", "0.e1", ".5", "1E5", "-0", "[-]", "\"\\u0000\"",
            "{\"data\":1}", "[\"\\ud83d\\ude00\"]", "{\"\\u00e9\":[true,false,null]}",
        ]
        texts.append(String(repeating: "[", count: 14) + String(repeating: "]", count: 14))
        texts.append(String(repeating: "[", count: 15) + String(repeating: "]", count: 15))
        texts.append(String(repeating: "[", count: 16) + String(repeating: "]", count: 16))
        texts.append(String(repeating: "{\"a\":", count: 15) + "1" + String(repeating: "}", count: 15))
        texts.append("[" + Array(repeating: "1", count: 996).joined(separator: ",") + "]")
        texts.append("[" + Array(repeating: "1", count: 997).joined(separator: ",") + "]")
        texts.append("[" + Array(repeating: "1", count: 998).joined(separator: ",") + "]")
        return texts
    }()

    /// Parses `{"channel":"c","data":<data>}` both ways.
    func bothWays(_ data: [UInt8]) -> (raw: Result<JSONValue, JSONParser.Error>, tree: Result<JSONValue, JSONParser.Error>) {
        let document = Array(#"{"channel":"c","data":"#.utf8) + data + [UInt8(ascii: "}")]
        return (Result { () throws(JSONParser.Error) in try self.raw.parse(document) },
                Result { () throws(JSONParser.Error) in try self.tree.parse(document) })
    }

    func expectSameVerdict(_ data: [UInt8]) {
        let (raw, tree) = self.bothWays(data)
        switch (raw, tree) {
        case (.success(let rawValue), .success(let treeValue)):
            // The raw text, parsed, is the tree the other parser built.
            guard case .raw(let text) = rawValue["data"], let treeData = treeValue["data"] else {
                Issue.record("data missing or not raw for \(String(decoding: data, as: UTF8.self))")
                return
            }
            #expect(Result { () throws(JSONParser.Error) in try self.tree.parse(text.bytes.readableBytesView) } == .success(treeData))
        case (.failure(let rawError), .failure(let treeError)):
            #expect(rawError == treeError, "different refusals for \(String(decoding: data, as: UTF8.self))")
        default:
            Issue.record("accepted one way, refused the other: \(String(decoding: data, as: UTF8.self)): \(raw) vs \(tree)")
        }
    }

    @Test("raw data is accepted and refused exactly as the tree parser does, with the same error", arguments: Self.corpus)
    func sameVerdict(_ data: String) {
        self.expectSameVerdict(Array(data.utf8))
    }

    @Test("the same verdicts on 3,000 mutations of valid documents")
    func sameVerdictMutated() {
        var random = SplitMix64(seed: 0x5EED)
        let seeds = Self.corpus.filter { (try? self.tree.parse(Array($0.utf8))) != nil }.map { Array($0.utf8) }
        let alphabet = Array(#"{}[]":,\ u0123456789abcdefABCDEF.eE+-tnrfl"#.utf8) + [0x0A, 0x01, 0xC3, 0xA9]
        for _ in 0..<3_000 {
            var bytes = seeds[Int(random.next() % UInt64(seeds.count))]
            for _ in 0...(random.next() % 3) {
                let position = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count))
                let byte = alphabet[Int(random.next() % UInt64(alphabet.count))]
                switch random.next() % 3 {
                case 0 where !bytes.isEmpty: bytes[position] = byte
                case 1 where !bytes.isEmpty: bytes.remove(at: position)
                default: bytes.insert(byte, at: position)
                }
            }
            // The parser takes UTF-8 only (callers validate first); keep to that.
            guard String(validating: bytes, as: UTF8.self) != nil else { continue }
            self.expectSameVerdict(bytes)
        }
    }

    @Test("validating: one value, surrounding whitespace dropped, limits kept")
    func validating() throws {
        #expect(try RawJSON(validating: Array(" [1, 2] \n".utf8)).text == "[1, 2]")
        #expect(throws: JSONParser.Error.self) { try RawJSON(validating: Array("".utf8)) }
        #expect(throws: JSONParser.Error.self) { try RawJSON(validating: Array("1 2".utf8)) }
        #expect(throws: JSONParser.Error.self) { try RawJSON(validating: Array("{\"a\":}".utf8)) }
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(throws: JSONParser.Error.self) { try RawJSON(validating: Array(deep.utf8)) }
        let many = "[" + Array(repeating: "1", count: 20).joined(separator: ",") + "]"
        #expect(throws: JSONParser.Error.self) { try RawJSON(validating: Array(many.utf8), parser: JSONParser(maximumValues: 10)) }
    }
}

extension String {
    fileprivate var trimmingWhitespace: String {
        String(self.drop { " \t\r\n".contains($0) }.reversed().drop { " \t\r\n".contains($0) }.reversed())
    }
}

/// A small deterministic generator, so a failing mutation is the same on every run.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
