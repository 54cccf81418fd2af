public import NIOCore

/// Writes one JSON object into a `ByteBuffer` member by member: commas, quoting and the escaping
/// of keys and strings are its business, nesting goes by closures.
///
/// ```swift
/// buffer.writeJSONObject { reply in
///     reply.field("client", string: id)
///     reply.field("ping", int: 25)
///     reply.object("subs") { subs in ... }
///     reply.array("nodes") { nodes in nodes.object { ... } }
/// }
/// ```
///
/// For every answer that is not per message: command results, errors, pushes such as
/// `disconnect`, and the HTTP API. The per-message encoders (the publication push every
/// subscriber gets, the reply envelope, the SSE resume id) write their bytes by hand
/// (`writePublicationPush`), and a member can hold what they write (`field(_:writtenBy:)`).
public struct JSONObjectWriter {
    @usableFromInline var buffer: ByteBuffer
    @usableFromInline var isEmpty = true

    @inlinable
    init(buffer: ByteBuffer) {
        self.buffer = buffer
    }

    @inlinable
    mutating func key(_ key: String) {
        if self.isEmpty {
            self.isEmpty = false
        } else {
            self.buffer.writeInteger(UInt8(ascii: ","))
        }
        self.buffer.writeJSONString(key)
        self.buffer.writeInteger(UInt8(ascii: ":"))
    }

    /// `"key":"value"`, the value escaped.
    @inlinable
    public mutating func field(_ key: String, string: String) {
        self.key(key)
        self.buffer.writeJSONString(string)
    }

    /// `"key":123`.
    @inlinable
    public mutating func field(_ key: String, int: some BinaryInteger) {
        self.key(key)
        self.buffer.writeDecimal(int)
    }

    /// `"key":true` or `"key":false`.
    @inlinable
    public mutating func field(_ key: String, bool: Bool) {
        self.key(key)
        self.buffer.writeStaticString(bool ? "true" : "false")
    }

    /// `"key":` and `value` as JSON.
    @inlinable
    public mutating func field(_ key: String, json: JSONValue) {
        self.key(key)
        self.buffer.writeJSON(json)
    }

    /// `"key":` and JSON text that was validated where it came from (a publication's data).
    @inlinable
    public mutating func field(_ key: String, raw: RawJSON) {
        self.key(key)
        self.buffer.writeImmutableBuffer(raw.bytes)
    }

    /// `"key":` and a value another encoder writes; `write` must write exactly one JSON value.
    @inlinable
    public mutating func field(_ key: String, writtenBy write: (inout ByteBuffer) throws -> Void) rethrows {
        self.key(key)
        try write(&self.buffer)
    }

    /// `"key":{...}` with the members `body` writes.
    @inlinable
    public mutating func object(_ key: String, _ body: (inout JSONObjectWriter) throws -> Void) rethrows {
        self.key(key)
        try self.buffer.writeJSONObject(body)
    }

    /// `"key":[...]` with the elements `body` writes.
    @inlinable
    public mutating func array(_ key: String, _ body: (inout JSONArrayWriter) throws -> Void) rethrows {
        self.key(key)
        try self.buffer.writeJSONArray(body)
    }
}

/// Writes one JSON array into a `ByteBuffer` element by element; the array counterpart of
/// `JSONObjectWriter`.
public struct JSONArrayWriter {
    @usableFromInline var buffer: ByteBuffer
    @usableFromInline var isEmpty = true

    @inlinable
    init(buffer: ByteBuffer) {
        self.buffer = buffer
    }

    @inlinable
    mutating func separate() {
        if self.isEmpty {
            self.isEmpty = false
        } else {
            self.buffer.writeInteger(UInt8(ascii: ","))
        }
    }

    /// A string element, escaped.
    @inlinable
    public mutating func element(string: String) {
        self.separate()
        self.buffer.writeJSONString(string)
    }

    /// An integer element.
    @inlinable
    public mutating func element(int: some BinaryInteger) {
        self.separate()
        self.buffer.writeDecimal(int)
    }

    /// A `true` or `false` element.
    @inlinable
    public mutating func element(bool: Bool) {
        self.separate()
        self.buffer.writeStaticString(bool ? "true" : "false")
    }

    /// `value` as JSON.
    @inlinable
    public mutating func element(json: JSONValue) {
        self.separate()
        self.buffer.writeJSON(json)
    }

    /// An element another encoder writes; `write` must write exactly one JSON value.
    @inlinable
    public mutating func element(writtenBy write: (inout ByteBuffer) throws -> Void) rethrows {
        self.separate()
        try write(&self.buffer)
    }

    /// An object element with the members `body` writes.
    @inlinable
    public mutating func object(_ body: (inout JSONObjectWriter) throws -> Void) rethrows {
        self.separate()
        try self.buffer.writeJSONObject(body)
    }

    /// An array element with the elements `body` writes.
    @inlinable
    public mutating func array(_ body: (inout JSONArrayWriter) throws -> Void) rethrows {
        self.separate()
        try self.buffer.writeJSONArray(body)
    }
}

extension ByteBuffer {
    /// Writes a JSON object whose members `body` adds (see `JSONObjectWriter`).
    @inlinable
    public mutating func writeJSONObject(_ body: (inout JSONObjectWriter) throws -> Void) rethrows {
        // The writer takes the buffer over and this one holds the shared empty buffer meanwhile,
        // so the writer's buffer stays uniquely referenced and is never copied on write.
        var writer = JSONObjectWriter(buffer: self)
        self = ByteBuffer()
        defer { self = writer.buffer }
        writer.buffer.writeInteger(UInt8(ascii: "{"))
        try body(&writer)
        writer.buffer.writeInteger(UInt8(ascii: "}"))
    }

    /// Writes a JSON array whose elements `body` adds (see `JSONArrayWriter`).
    @inlinable
    public mutating func writeJSONArray(_ body: (inout JSONArrayWriter) throws -> Void) rethrows {
        var writer = JSONArrayWriter(buffer: self)
        self = ByteBuffer()
        defer { self = writer.buffer }
        writer.buffer.writeInteger(UInt8(ascii: "["))
        try body(&writer)
        writer.buffer.writeInteger(UInt8(ascii: "]"))
    }
}
