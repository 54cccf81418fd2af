import NIOCore

/// Reads a `text/event-stream` body as it arrives, in pieces cut anywhere, and gives back its events:
/// the `data` lines of each (joined with `\n`) and the last event id seen. Lines may end with CRLF,
/// LF or CR; comments (`:`) and fields other than `data` and `id` are skipped, as the HTML standard
/// says. One event larger than `maximumEventSize` is an error: a node (or something posing as one)
/// cannot make the client buffer without bound.
struct EventStreamParser {
    struct Event: Equatable {
        /// The event's `data` lines, joined with `\n`.
        var data: ByteBuffer
        /// The last `id` field seen so far, in this event or an earlier one.
        var lastEventID: String?
    }

    struct EventTooLarge: Error, Equatable {
        var limit: Int
    }

    let maximumEventSize: Int
    private var line: [UInt8] = []
    private var data = ByteBuffer()
    private var hasData = false
    private var lastEventID: String?
    /// The previous byte was a CR: a LF right after it ends nothing more.
    private var afterCR = false
    /// Bytes of the event being read (its lines, whatever their field).
    private var eventSize = 0

    init(maximumEventSize: Int) {
        self.maximumEventSize = maximumEventSize
    }

    /// The events `bytes` completes, oldest first.
    mutating func push(_ bytes: ByteBuffer) throws(EventTooLarge) -> [Event] {
        var events: [Event] = []
        for byte in bytes.readableBytesView {
            if self.afterCR {
                self.afterCR = false
                if byte == UInt8(ascii: "\n") { continue }
            }
            if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
                self.afterCR = byte == UInt8(ascii: "\r")
                if let event = self.endLine() { events.append(event) }
                continue
            }
            self.eventSize += 1
            guard self.eventSize <= self.maximumEventSize else { throw EventTooLarge(limit: self.maximumEventSize) }
            self.line.append(byte)
        }
        return events
    }

    private mutating func endLine() -> Event? {
        defer { self.line.removeAll(keepingCapacity: true) }
        guard !self.line.isEmpty else { return self.dispatch() }
        guard self.line[0] != UInt8(ascii: ":") else { return nil }
        let colon = self.line.firstIndex(of: UInt8(ascii: ":"))
        let field = self.line[..<(colon ?? self.line.endIndex)]
        var value = colon.map { self.line[($0 + 1)...] } ?? []
        if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        if field.elementsEqual("data".utf8) {
            if self.hasData { self.data.writeInteger(UInt8(ascii: "\n")) }
            self.data.writeBytes(value)
            self.hasData = true
        } else if field.elementsEqual("id".utf8), !value.contains(0) {
            self.lastEventID = String(decoding: value, as: UTF8.self)
        }
        return nil
    }

    private mutating func dispatch() -> Event? {
        self.eventSize = 0
        guard self.hasData else { return nil }
        let event = Event(data: self.data, lastEventID: self.lastEventID)
        self.data = ByteBuffer()
        self.hasData = false
        return event
    }
}
