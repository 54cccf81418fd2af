/// A strict RFC 8259 JSON parser for untrusted input, with limits on nesting
/// depth and on the number of values so a hostile frame cannot exhaust the stack or memory.
///
/// Input must already be valid UTF-8 (WebSocket text frames are validated
/// before they get here; the HTTP API validates bodies first).
///
/// About 450 lines: one recursive-descent parser whose limits (depth, values,
/// number and string forms) sit in the code they bound.
public struct JSONParser: Sendable {
    /// Why a document was refused.
    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public var message: String
        public var offset: Int
        public var description: String { "invalid JSON at byte \(self.offset): \(self.message)" }
    }

    /// An object member whose value is validated like any other but kept as its source text
    /// (`JSONValue.raw`), never built into a tree: `publish.data`, which the server only carries.
    public struct RawMember: Hashable, Sendable {
        /// The member's name.
        public var key: String
        /// How deep the object holding it is: 1 for the document's top-level object, 2 for an object inside it.
        public var depth: Int

        public init(key: String, depth: Int) {
            self.key = key
            self.depth = depth
        }
    }

    public var maximumDepth: Int
    public var maximumValues: Int
    /// Members kept raw. Their values count against `maximumValues` and `maximumDepth` and are
    /// checked by the same rules, so a document is accepted or refused exactly as without them.
    public var rawMembers: [RawMember]

    public init(maximumDepth: Int = 64, maximumValues: Int = 100_000, rawMembers: [RawMember] = []) {
        self.maximumDepth = maximumDepth
        self.maximumValues = maximumValues
        self.rawMembers = rawMembers
    }

    /// Parses exactly one JSON value, allowing surrounding whitespace.
    public func parse(_ bytes: some Collection<UInt8>) throws(Error) -> JSONValue {
        let values = try self.parseSequence(bytes)
        guard values.count == 1 else {
            throw Error(message: values.isEmpty ? "empty document" : "more than one value", offset: 0)
        }
        return values[0]
    }

    /// Parses one or more JSON values separated by whitespace (the protocol's
    /// newline-separated framing). An empty document gives an empty array.
    public func parseSequence(_ bytes: some Collection<UInt8>) throws(Error) -> [JSONValue] {
        let result: Result<[JSONValue], Error> =
            bytes.withContiguousStorageIfAvailable { buffer in
                self.run(buffer)
            } ?? Array(bytes).withUnsafeBufferPointer { buffer in
                self.run(buffer)
            }
        return try result.get()
    }

    /// Checks that `bytes` hold exactly one JSON value (surrounding whitespace allowed) by the
    /// same rules and limits as `parse`, without building it; returns where the value lies.
    func validateOne(_ buffer: UnsafeBufferPointer<UInt8>) throws(Error) -> Range<Int> {
        var cursor = Cursor(bytes: buffer, maximumDepth: self.maximumDepth, maximumValues: self.maximumValues, rawMembers: [])
        cursor.skipWhitespace()
        guard !cursor.atEnd else { throw Error(message: "empty document", offset: 0) }
        let start = try cursor.skipValue(depth: 0)
        let end = cursor.index
        cursor.skipWhitespace()
        guard cursor.atEnd else { throw Error(message: "more than one value", offset: 0) }
        return start..<end
    }

    private func run(_ buffer: UnsafeBufferPointer<UInt8>) -> Result<[JSONValue], Error> {
        var cursor = Cursor(bytes: buffer, maximumDepth: self.maximumDepth, maximumValues: self.maximumValues, rawMembers: self.rawMembers)
        do {
            var values: [JSONValue] = []
            cursor.skipWhitespace()
            while !cursor.atEnd {
                values.append(try cursor.parseValue(depth: 0))
                cursor.skipWhitespace()
            }
            return .success(values)
        } catch {
            return .failure(error)
        }
    }
}

/// The parser's position in a document, with its limits; shared with `ClientMessage.parsePublish`.
struct Cursor {
    let bytes: UnsafeBufferPointer<UInt8>
    let maximumDepth: Int
    let maximumValues: Int
    let rawMembers: [JSONParser.RawMember]
    var index = 0
    var valueCount = 0

    init(bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int, maximumValues: Int, rawMembers: [JSONParser.RawMember]) {
        self.bytes = bytes
        self.maximumDepth = maximumDepth
        self.maximumValues = maximumValues
        self.rawMembers = rawMembers
    }

    var atEnd: Bool { self.index >= self.bytes.count }

    func fail(_ message: String) -> JSONParser.Error {
        JSONParser.Error(message: message, offset: self.index)
    }

    mutating func skipWhitespace() {
        while self.index < self.bytes.count {
            switch self.bytes[self.index] {
            case 0x20, 0x09, 0x0A, 0x0D: self.index += 1
            default: return
            }
        }
    }

    mutating func parseValue(depth: Int) throws(JSONParser.Error) -> JSONValue {
        self.valueCount += 1
        guard self.valueCount <= self.maximumValues else { throw self.fail("too many values") }
        self.skipWhitespace()
        guard !self.atEnd else { throw self.fail("unexpected end") }
        switch self.bytes[self.index] {
        case UInt8(ascii: "{"):
            guard depth < self.maximumDepth else { throw self.fail("nesting too deep") }
            return try self.parseObject(depth: depth + 1)
        case UInt8(ascii: "["):
            guard depth < self.maximumDepth else { throw self.fail("nesting too deep") }
            return try self.parseArray(depth: depth + 1)
        case UInt8(ascii: "\""):
            return .string(try self.parseString())
        case UInt8(ascii: "t"):
            try self.expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try self.expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try self.expectLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try self.parseNumber()
        default:
            throw self.fail("unexpected character")
        }
    }

    // MARK: Validating without building (raw members)

    /// Moves past one value, checking it by the same rules, limits and errors as `parseValue`
    /// without building anything; returns where the value starts (after leading whitespace).
    mutating func skipValue(depth: Int) throws(JSONParser.Error) -> Int {
        self.valueCount += 1
        guard self.valueCount <= self.maximumValues else { throw self.fail("too many values") }
        self.skipWhitespace()
        guard !self.atEnd else { throw self.fail("unexpected end") }
        let start = self.index
        switch self.bytes[self.index] {
        case UInt8(ascii: "{"):
            guard depth < self.maximumDepth else { throw self.fail("nesting too deep") }
            try self.skipObject(depth: depth + 1)
        case UInt8(ascii: "["):
            guard depth < self.maximumDepth else { throw self.fail("nesting too deep") }
            try self.skipArray(depth: depth + 1)
        case UInt8(ascii: "\""):
            try self.skipString()
        case UInt8(ascii: "t"):
            try self.expectLiteral("true")
        case UInt8(ascii: "f"):
            try self.expectLiteral("false")
        case UInt8(ascii: "n"):
            try self.expectLiteral("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            _ = try self.scanNumber()
        default:
            throw self.fail("unexpected character")
        }
        return start
    }

    mutating func skipObject(depth: Int) throws(JSONParser.Error) {
        self.index += 1  // {
        self.skipWhitespace()
        if !self.atEnd, self.bytes[self.index] == UInt8(ascii: "}") {
            self.index += 1
            return
        }
        while true {
            self.skipWhitespace()
            guard !self.atEnd, self.bytes[self.index] == UInt8(ascii: "\"") else {
                throw self.fail("expected member name")
            }
            try self.skipString()
            self.skipWhitespace()
            guard !self.atEnd, self.bytes[self.index] == UInt8(ascii: ":") else { throw self.fail("expected ':'") }
            self.index += 1
            _ = try self.skipValue(depth: depth)
            self.skipWhitespace()
            guard !self.atEnd else { throw self.fail("unexpected end") }
            switch self.bytes[self.index] {
            case UInt8(ascii: ","): self.index += 1
            case UInt8(ascii: "}"):
                self.index += 1
                return
            default: throw self.fail("expected ',' or '}'")
            }
        }
    }

    mutating func skipArray(depth: Int) throws(JSONParser.Error) {
        self.index += 1  // [
        self.skipWhitespace()
        if !self.atEnd, self.bytes[self.index] == UInt8(ascii: "]") {
            self.index += 1
            return
        }
        while true {
            _ = try self.skipValue(depth: depth)
            self.skipWhitespace()
            guard !self.atEnd else { throw self.fail("unexpected end") }
            switch self.bytes[self.index] {
            case UInt8(ascii: ","): self.index += 1
            case UInt8(ascii: "]"):
                self.index += 1
                return
            default: throw self.fail("expected ',' or ']'")
            }
        }
    }

    /// Moves past a string, checking escapes, surrogate pairs and control characters as `parseString` does.
    mutating func skipString() throws(JSONParser.Error) {
        self.index += 1  // opening quote
        while self.index < self.bytes.count {
            let b = self.bytes[self.index]
            switch b {
            case UInt8(ascii: "\""):
                self.index += 1
                return
            case UInt8(ascii: "\\"):
                self.index += 1
                guard self.index < self.bytes.count else { throw self.fail("unterminated string") }
                _ = try self.parseEscape()
            default:
                if b < 0x20 { throw self.fail("control character in string") }
                self.index += 1
            }
        }
        throw self.fail("unterminated string")
    }

    mutating func expectLiteral(_ literal: StaticString) throws(JSONParser.Error) {
        let count = literal.utf8CodeUnitCount
        guard self.bytes.count - self.index >= count else { throw self.fail("unexpected end") }
        let start = literal.utf8Start
        for i in 0..<count where self.bytes[self.index + i] != start[i] {
            throw self.fail("invalid literal")
        }
        self.index += count
    }

    mutating func parseObject(depth: Int) throws(JSONParser.Error) -> JSONValue {
        self.index += 1  // {
        var members: [(key: String, value: JSONValue)] = []
        self.skipWhitespace()
        if !self.atEnd, self.bytes[self.index] == UInt8(ascii: "}") {
            self.index += 1
            return .object(JSONObject(members))
        }
        members.reserveCapacity(4)  // one allocation for the usual small object instead of one per doubling
        while true {
            self.skipWhitespace()
            guard !self.atEnd, self.bytes[self.index] == UInt8(ascii: "\"") else {
                throw self.fail("expected member name")
            }
            let key = try self.parseString()
            self.skipWhitespace()
            guard !self.atEnd, self.bytes[self.index] == UInt8(ascii: ":") else { throw self.fail("expected ':'") }
            self.index += 1
            let value: JSONValue
            if !self.rawMembers.isEmpty, self.rawMembers.contains(where: { $0.depth == depth && $0.key == key }) {
                let start = try self.skipValue(depth: depth)
                value = .raw(RawJSON(validated: UnsafeBufferPointer(rebasing: self.bytes[start..<self.index])))
            } else {
                value = try self.parseValue(depth: depth)
            }
            members.append((key, value))
            self.skipWhitespace()
            guard !self.atEnd else { throw self.fail("unexpected end") }
            switch self.bytes[self.index] {
            case UInt8(ascii: ","): self.index += 1
            case UInt8(ascii: "}"):
                self.index += 1
                return .object(JSONObject(members))
            default: throw self.fail("expected ',' or '}'")
            }
        }
    }

    mutating func parseArray(depth: Int) throws(JSONParser.Error) -> JSONValue {
        self.index += 1  // [
        var elements: [JSONValue] = []
        self.skipWhitespace()
        if !self.atEnd, self.bytes[self.index] == UInt8(ascii: "]") {
            self.index += 1
            return .array(elements)
        }
        while true {
            elements.append(try self.parseValue(depth: depth))
            self.skipWhitespace()
            guard !self.atEnd else { throw self.fail("unexpected end") }
            switch self.bytes[self.index] {
            case UInt8(ascii: ","): self.index += 1
            case UInt8(ascii: "]"):
                self.index += 1
                return .array(elements)
            default: throw self.fail("expected ',' or ']'")
            }
        }
    }

    mutating func parseNumber() throws(JSONParser.Error) -> JSONValue {
        let start = try self.scanNumber()
        let text = String(decoding: UnsafeBufferPointer(rebasing: self.bytes[start..<self.index]), as: UTF8.self)
        return .number(text)
    }

    /// Moves past a number, checking its syntax; returns where it started.
    mutating func scanNumber() throws(JSONParser.Error) -> Int {
        let start = self.index
        if self.bytes[self.index] == UInt8(ascii: "-") { self.index += 1 }
        guard !self.atEnd else { throw self.fail("invalid number") }
        if self.bytes[self.index] == UInt8(ascii: "0") {
            self.index += 1
        } else if self.isDigit {
            while !self.atEnd, self.isDigit { self.index += 1 }
        } else {
            throw self.fail("invalid number")
        }
        if !self.atEnd, self.bytes[self.index] == UInt8(ascii: ".") {
            self.index += 1
            guard !self.atEnd, self.isDigit else { throw self.fail("invalid number") }
            while !self.atEnd, self.isDigit { self.index += 1 }
        }
        if !self.atEnd, self.bytes[self.index] | 0x20 == UInt8(ascii: "e") {
            self.index += 1
            if !self.atEnd, self.bytes[self.index] == UInt8(ascii: "+") || self.bytes[self.index] == UInt8(ascii: "-") {
                self.index += 1
            }
            guard !self.atEnd, self.isDigit else { throw self.fail("invalid number") }
            while !self.atEnd, self.isDigit { self.index += 1 }
        }
        return start
    }

    var isDigit: Bool {
        let b = self.bytes[self.index]
        return b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")
    }

    mutating func parseString() throws(JSONParser.Error) -> String {
        self.index += 1  // opening quote
        let start = self.index
        // Fast path: no escapes.
        while self.index < self.bytes.count {
            let b = self.bytes[self.index]
            if b == UInt8(ascii: "\"") {
                let s = String(decoding: UnsafeBufferPointer(rebasing: self.bytes[start..<self.index]), as: UTF8.self)
                self.index += 1
                return s
            }
            if b == UInt8(ascii: "\\") { break }
            if b < 0x20 { throw self.fail("control character in string") }
            self.index += 1
        }
        var scalars = Array(UnsafeBufferPointer(rebasing: self.bytes[start..<self.index]))
        while true {
            guard self.index < self.bytes.count else { throw self.fail("unterminated string") }
            let b = self.bytes[self.index]
            switch b {
            case UInt8(ascii: "\""):
                self.index += 1
                return String(decoding: scalars, as: UTF8.self)
            case UInt8(ascii: "\\"):
                self.index += 1
                guard self.index < self.bytes.count else { throw self.fail("unterminated string") }
                let scalar = try self.parseEscape()
                if scalar.isASCII {
                    scalars.append(UInt8(truncatingIfNeeded: scalar.value))
                } else {
                    scalars.append(contentsOf: UTF8.encode(scalar)!)
                }
            default:
                if b < 0x20 { throw self.fail("control character in string") }
                scalars.append(b)
                self.index += 1
            }
        }
    }

    /// Reads one escape after its backslash (the index is on the escape letter).
    mutating func parseEscape() throws(JSONParser.Error) -> Unicode.Scalar {
        let e = self.bytes[self.index]
        self.index += 1
        switch e {
        case UInt8(ascii: "\""): return "\""
        case UInt8(ascii: "\\"): return "\\"
        case UInt8(ascii: "/"): return "/"
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "u"):
            var code = try self.parseHex4()
            if code >= 0xD800, code < 0xDC00 {
                // High surrogate: a low surrogate must follow.
                guard self.bytes.count - self.index >= 6,
                    self.bytes[self.index] == UInt8(ascii: "\\"),
                    self.bytes[self.index + 1] == UInt8(ascii: "u")
                else { throw self.fail("unpaired surrogate") }
                self.index += 2
                let low = try self.parseHex4()
                guard low >= 0xDC00, low < 0xE000 else { throw self.fail("unpaired surrogate") }
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            } else if code >= 0xDC00, code < 0xE000 {
                throw self.fail("unpaired surrogate")
            }
            guard let scalar = Unicode.Scalar(code) else { throw self.fail("invalid escape") }
            return scalar
        default:
            throw self.fail("invalid escape")
        }
    }

    mutating func parseHex4() throws(JSONParser.Error) -> UInt32 {
        guard self.bytes.count - self.index >= 4 else { throw self.fail("invalid unicode escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let b = self.bytes[self.index]
            let digit: UInt32
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(b - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
            default: throw self.fail("invalid unicode escape")
            }
            value = value << 4 | digit
            self.index += 1
        }
        return value
    }
}
