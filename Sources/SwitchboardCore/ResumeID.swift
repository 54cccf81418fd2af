public import NIOCore

/// The SSE event id: the position of every subscription of a session, so that
/// a reconnecting EventSource (which sends it back as `Last-Event-ID`) resumes
/// on whichever node takes the new stream.
///
/// The text is base64url (no padding) of a JSON object in the `connect`
/// command's `subs` format: `{channel: {"offset": N, "epoch": "E"}}`, `{}` for
/// channels without history.
public enum ResumeID {
    /// Most bytes of JSON an id holds: its base64url text (4/3 of it, under 5.5 KB) then fits the
    /// 8 KB a node (and most proxies) take in one header field, and leaves more than 10 KB of the
    /// 16 KB a whole request head may have (node and balancer) to the URL and the other headers,
    /// so it can come back as `Last-Event-ID`.
    public static let maximumJSONBytes = 4_096

    /// The id for these subscriptions (nil position: a channel without one yet); nil when its JSON
    /// would pass `maximumJSONBytes`.
    public static func encode(_ subs: [(channel: String, position: StreamPosition?)]) -> String? {
        var text = ByteBuffer()
        var scratch = ByteBuffer()
        guard Self.write(subs, into: &text, scratch: &scratch) else { return nil }
        return String(buffer: text)
    }

    /// Writes the id for these subscriptions into `buffer`, building its JSON in `scratch` (kept by
    /// the caller, so the bytes are allocated once per stream, not per event). Returns false, with
    /// nothing written, as soon as the JSON passes `maximumJSONBytes`: the work per event is bounded
    /// whatever the subscriptions' names. Written by hand rather than with `JSONObjectWriter`: every
    /// SSE event carries one.
    public static func write(
        _ subs: [(channel: String, position: StreamPosition?)], into buffer: inout ByteBuffer, scratch: inout ByteBuffer
    ) -> Bool {
        scratch.clear()
        scratch.writeInteger(UInt8(ascii: "{"))
        for (i, sub) in subs.enumerated() {
            if i > 0 { scratch.writeInteger(UInt8(ascii: ",")) }
            scratch.writeJSONString(sub.channel)
            if let position = sub.position {
                scratch.writeStaticString(":{\"offset\":")
                scratch.writeDecimal(position.offset)
                scratch.writeStaticString(",\"epoch\":")
                scratch.writeJSONString(position.epoch)
                scratch.writeInteger(UInt8(ascii: "}"))
            } else {
                scratch.writeStaticString(":{}")
            }
            guard scratch.readableBytes < Self.maximumJSONBytes else { return false }
        }
        scratch.writeInteger(UInt8(ascii: "}"))
        scratch.withUnsafeReadableBytes { Base64URL.write($0, into: &buffer) }
        return true
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
