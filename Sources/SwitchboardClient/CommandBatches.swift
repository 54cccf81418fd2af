import NIOCore

/// Commands waiting to go out as HTTP request bodies (SSE command POSTs, long-polling's `/rpc`), one
/// JSON object per line, oldest first: each batch as many whole commands as fit in `maximumBodySize`
/// (the node's `maxMessageSize`: a larger body is refused with 413). A plain value.
struct CommandBatches {
    let maximumBodySize: Int
    private var waiting: [ByteBuffer] = []
    private var next = 0

    init(maximumBodySize: Int) {
        self.maximumBodySize = maximumBodySize
    }

    var isEmpty: Bool { self.next == self.waiting.count }

    mutating func append(_ command: ByteBuffer) {
        self.waiting.append(command)
    }

    /// The next body, or nil when nothing waits. A command alone over the limit still goes in a
    /// body of its own (the client checks sizes before a command gets here: it would be a bug, and
    /// the node's 413 says so, rather than a command stuck forever).
    mutating func nextBatch() -> ByteBuffer? {
        guard self.next < self.waiting.count else { return nil }
        var body = ByteBuffer()
        while self.next < self.waiting.count {
            let command = self.waiting[self.next]
            let size = command.readableBytes + (body.readableBytes > 0 ? 1 : 0)
            guard body.readableBytes == 0 || body.readableBytes + size <= self.maximumBodySize else { break }
            if body.readableBytes > 0 { body.writeInteger(UInt8(ascii: "\n")) }
            body.writeImmutableBuffer(command)
            self.next += 1
        }
        if self.next == self.waiting.count {
            self.waiting.removeAll(keepingCapacity: true)
            self.next = 0
        }
        return body
    }

    mutating func removeAll() {
        self.waiting = []
        self.next = 0
    }
}
