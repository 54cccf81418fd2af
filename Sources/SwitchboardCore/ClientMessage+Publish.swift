/// The common case of a client command, read without building a tree.
extension ClientMessage {
    /// Reads a frame that holds exactly one `publish` of the plain shape
    /// `{"id":N,"publish":{"channel":"…","data":…}}` (members of `publish` in either order,
    /// whitespace anywhere JSON allows it), with `parser`'s limits: the same message `parse` would
    /// make of the tree, without the tree (three allocations and a walk over it per publish).
    ///
    /// Nil for anything else, valid or not: other commands, other members, escapes in the
    /// channel name, an id out of range, several commands in one frame, any error. The caller
    /// then takes the general path, which gives the answer or the error. Input must be valid
    /// UTF-8 (a WebSocket text frame).
    public static func parsePublish(_ bytes: UnsafeBufferPointer<UInt8>, parser: JSONParser) -> ClientMessage? {
        var cursor = Cursor(bytes: bytes, maximumDepth: parser.maximumDepth, maximumValues: parser.maximumValues, rawMembers: [])
        guard cursor.take("{"), cursor.takeKey("id") else { return nil }
        cursor.skipWhitespace()
        guard let id = cursor.takeCommandID(), cursor.take(","), cursor.takeKey("publish"), cursor.take("{") else { return nil }
        var channel: String?
        var data: RawJSON?
        // Values count against the limit as the general parse counts them: the command, its id, `publish`, then its members in order.
        cursor.valueCount = 3
        repeat {
            if channel == nil, cursor.takeKey("channel") {
                cursor.valueCount += 1
                guard cursor.valueCount <= cursor.maximumValues else { return nil }
                cursor.skipWhitespace()
                guard let name = cursor.takePlainString() else { return nil }
                channel = name
            } else if data == nil, cursor.takeKey("data") {
                guard let start = try? cursor.skipValue(depth: 2) else { return nil }
                data = RawJSON(validated: UnsafeBufferPointer(rebasing: bytes[start..<cursor.index]))
            } else {
                return nil
            }
        } while cursor.take(",")
        guard cursor.take("}"), cursor.take("}"), let channel, let data else { return nil }
        cursor.skipWhitespace()
        guard cursor.atEnd, (try? ChannelName.validate(channel)) != nil else { return nil }
        return .command(ClientCommand(id: id, method: .publish(PublishParams(channel: channel, data: data))))
    }
}

extension Cursor {
    /// Skips whitespace, then takes `byte` if it comes next.
    fileprivate mutating func take(_ byte: Unicode.Scalar) -> Bool {
        self.skipWhitespace()
        guard !self.atEnd, self.bytes[self.index] == UInt8(ascii: byte) else { return false }
        self.index += 1
        return true
    }

    /// Skips whitespace, then takes `"key"` and the colon after it if both come next (no escapes);
    /// otherwise takes nothing but the whitespace.
    fileprivate mutating func takeKey(_ key: StaticString) -> Bool {
        self.skipWhitespace()
        let start = self.index
        let length = key.utf8CodeUnitCount
        guard self.bytes.count - start >= length + 2, self.bytes[start] == UInt8(ascii: "\""),
            self.bytes[start + length + 1] == UInt8(ascii: "\"")
        else { return false }
        let matches = key.withUTF8Buffer { key in
            key.indices.allSatisfy { self.bytes[start + 1 + $0] == key[$0] }
        }
        guard matches else { return false }
        self.index = start + length + 2
        guard self.take(":") else {
            self.index = start  // nothing taken: the caller may try another key here
            return false
        }
        return true
    }

    /// A command id: 1 to 4294967295 written as a plain integer (no sign, fraction, exponent or
    /// leading zero), which the general path would take as the same number.
    fileprivate mutating func takeCommandID() -> UInt32? {
        var value: UInt64 = 0
        var digits = 0
        while !self.atEnd, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self.bytes[self.index]) {
            guard digits < 10 else { return nil }
            value = value * 10 + UInt64(self.bytes[self.index] - UInt8(ascii: "0"))
            digits += 1
            self.index += 1
        }
        guard digits > 0, self.bytes[self.index - digits] != UInt8(ascii: "0"), value <= UInt64(UInt32.max) else { return nil }
        if !self.atEnd, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(self.bytes[self.index]) { return nil }
        return UInt32(value)
    }

    /// A string with no escapes and no control characters, as a `String`.
    fileprivate mutating func takePlainString() -> String? {
        guard !self.atEnd, self.bytes[self.index] == UInt8(ascii: "\"") else { return nil }
        let start = self.index + 1
        var end = start
        while end < self.bytes.count {
            let byte = self.bytes[end]
            if byte == UInt8(ascii: "\"") { break }
            guard byte >= 0x20, byte != UInt8(ascii: "\\") else { return nil }
            end += 1
        }
        guard end < self.bytes.count else { return nil }
        self.index = end + 1
        let text = UnsafeBufferPointer(rebasing: self.bytes[start..<end])
        guard UTF8Validation.isValid(UnsafeRawBufferPointer(text)) else { return nil }
        return String(decoding: text, as: UTF8.self)
    }
}
