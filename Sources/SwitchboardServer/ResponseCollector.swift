import NIOCore

/// Gathers the JSON objects a short-lived session produces (a long-poll or an
/// `/rpc` call) and hands them over once, as one JSON array.
///
/// Confined to the event loop of the HTTP connection that asked.
final class ResponseCollector {
    enum Purpose {
        /// Answer at the first object after connecting (publications, positions), or at the timeout.
        case poll
        /// Answer when every command has its reply.
        case rpc
    }

    let purpose: Purpose
    private(set) var objects: [ByteBuffer] = []
    /// Set once the session has turned its connect result into objects; nothing is answered before.
    var isReady = false
    /// The request's time is up: answer as soon as ready, even with nothing.
    var timedOut = false
    private var onComplete: ((ByteBuffer) -> Void)?

    init(purpose: Purpose, onComplete: @escaping (ByteBuffer) -> Void) {
        self.purpose = purpose
        self.onComplete = onComplete
    }

    var isCompleted: Bool { self.onComplete == nil }

    /// Adds one object's JSON text (a frame payload may hold several, separated by `\n`).
    func append(_ json: ByteBuffer) {
        guard !self.isCompleted else { return }
        var json = json
        while json.readableBytes > 0 {
            let view = json.readableBytesView
            if let newline = view.firstIndex(of: UInt8(ascii: "\n")) {
                let length = newline - view.startIndex
                if length > 0 { self.objects.append(json.readSlice(length: length)!) }
                json.moveReaderIndex(forwardBy: 1)
            } else {
                self.objects.append(json)
                return
            }
        }
    }

    /// Sends the array (once); later calls do nothing.
    func complete(allocator: ByteBufferAllocator) {
        guard let onComplete = self.onComplete else { return }
        self.onComplete = nil
        var body = allocator.buffer(capacity: self.objects.reduce(2) { $0 + $1.readableBytes + 1 })
        body.writeInteger(UInt8(ascii: "["))
        for (i, var object) in self.objects.enumerated() {
            if i > 0 { body.writeInteger(UInt8(ascii: ",")) }
            body.writeBuffer(&object)
        }
        body.writeInteger(UInt8(ascii: "]"))
        self.objects = []
        onComplete(body)
    }

    /// Drops the answer (the asker went away).
    func abandon() {
        self.onComplete = nil
        self.objects = []
    }
}

@available(*, unavailable)
extension ResponseCollector: Sendable {}
