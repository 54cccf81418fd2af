import NIOCore

/// The SSE event id: the position of every subscription of a session, so that
/// a reconnecting EventSource (which sends it back as `Last-Event-ID`) resumes
/// on whichever node takes the new stream.
///
/// The text is base64url (no padding) of a JSON object in the `connect`
/// command's `subs` format: `{channel: {"offset": N, "epoch": "E"}}`, `{}` for
/// channels without history.
public enum ResumeID {
    /// The id for these subscriptions (nil position: a channel without one yet). Written by hand
    /// rather than with `JSONObjectWriter`: every SSE event carries one.
    public static func encode(_ subs: [(channel: String, position: StreamPosition?)]) -> String {
        var json = ByteBuffer()
        json.writeInteger(UInt8(ascii: "{"))
        for (i, sub) in subs.enumerated() {
            if i > 0 { json.writeInteger(UInt8(ascii: ",")) }
            json.writeJSONString(sub.channel)
            if let position = sub.position {
                json.writeStaticString(":{\"offset\":")
                json.writeString(String(position.offset))
                json.writeStaticString(",\"epoch\":")
                json.writeJSONString(position.epoch)
                json.writeInteger(UInt8(ascii: "}"))
            } else {
                json.writeStaticString(":{}")
            }
        }
        json.writeInteger(UInt8(ascii: "}"))
        return Base64URL.encode(Array(json.readableBytesView))
    }

    /// The subscriptions an id names; throws on anything that is not an id made by `encode`.
    public static func decode(_ id: Substring, parser: JSONParser = JSONParser(maximumDepth: 4, maximumValues: 10_000)) throws(SwitchboardError) -> [(channel: String, since: StreamPosition?)] {
        guard let bytes = Base64URL.decode(id) else { throw .badRequest("Last-Event-ID is not base64url") }
        // JSONParser takes only UTF-8 (it would turn other bytes into U+FFFD and accept them).
        guard UTF8Validation.isValid(bytes) else { throw .badRequest("Last-Event-ID is not a position object") }
        let value: JSONValue
        do {
            value = try parser.parse(bytes)
        } catch {
            throw .badRequest("Last-Event-ID is not a position object")
        }
        return try ConnectParams.parseSubs(value)
    }
}
