import NIOCore
import SwitchboardCore

/// A short-lived session's output (a long-poll or an `/rpc` call): gathers
/// the JSON objects it produces and hands them over once, as one JSON array,
/// the answer to the HTTP request that asked.
///
/// Confined to the event loop of the HTTP connection that asked.
final class CollectOutput: SessionOutput {
    enum Purpose {
        /// Answer at the first object after connecting (publications, positions), or at the timeout.
        case poll
        /// Answer when every command has its reply.
        case rpc
    }

    /// A long-poll's entry in presence: under `client` (the poller's own id, hashed with its user, so
    /// no client can write over another's entry), for `ttl` seconds from each poll.
    struct PollPresence {
        var client: String
        var ttl: Double
        /// The poller's address: each address has a bounded number of pollers in presence.
        var address: String = ""
    }

    let purpose: Purpose
    /// Set for a poll that named its `client`: its channels list it in presence.
    var pollPresence: PollPresence?
    private(set) var objects: [ByteBuffer] = []
    /// Bytes the answer may still grow by (it starts at `maximumBytes`, the node's outbound limit).
    private(set) var remainingBytes: Int
    let maximumBytes: Int
    /// Something did not fit: nothing more is taken but positions (a later publication after a
    /// dropped one would look like a gap to the client).
    private(set) var isFull = false
    /// Set once the session has turned its connect result into objects; nothing is answered before.
    var isReady = false
    /// The request's time is up: answer as soon as ready, even with nothing.
    var timedOut = false
    /// Why the session ended before its answer was complete, if it did (3507: the connection's
    /// command rate, which ends the HTTP connection too).
    private(set) var endCode: DisconnectCode?
    private var onComplete: ((ByteBuffer) -> Void)?
    let allocator = ByteBufferAllocator()

    init(purpose: Purpose, maximumBytes: Int, onComplete: @escaping (ByteBuffer) -> Void) {
        self.purpose = purpose
        self.maximumBytes = maximumBytes
        self.remainingBytes = maximumBytes
        self.onComplete = onComplete
    }

    // MARK: SessionOutput

    var transport: TransportName { self.purpose == .poll ? .longpoll : .rpc }
    var answersPings: Bool { false }
    var takesCombinedMessages: Bool { false }
    var closeCarriesCode: Bool { false }

    /// The session is in no pipeline: its HTTP handler hands the answer on.
    func attach(_ context: ChannelHandlerContext) {}
    func detach() {}

    func write(_ message: OutboundMessage, from session: ClientSession) {
        guard message.byteCount > 0 else { return }
        self.append(message.payload)
    }

    /// Answers once the session has what its request needs.
    func flush(from session: ClientSession) {
        session.finishCollectingIfDue()
    }

    /// Answers with what there is (the last object says why the session ended).
    func end(_ code: DisconnectCode, from session: ClientSession) {
        self.endCode = code
        self.complete()
    }

    // MARK: The answer

    /// Whether `bytes` more fit in the answer.
    func fits(_ bytes: Int) -> Bool {
        bytes + 1 <= self.remainingBytes
    }

    /// Whether an object of `bytes` fits any answer of this size, even an empty one.
    func fitsAnyAnswer(_ bytes: Int) -> Bool {
        bytes + 1 <= self.maximumBytes
    }

    /// Takes `bytes` of the answer for one `/rpc` reply; false when they do not fit (the reply
    /// is then replaced by an error). Replies of bounded size (errors, publish results) need none:
    /// there are at most `maxCommandsPerRequest` of them.
    func reserve(_ bytes: Int) -> Bool {
        guard self.fits(bytes) else { return false }
        self.remainingBytes -= bytes + 1
        return true
    }

    var isCompleted: Bool { self.onComplete == nil }

    /// Adds one object's JSON text (a frame payload may hold several, separated by `\n`).
    /// An object that does not fit in what is left of the answer is dropped, with every one
    /// after it; returns false when anything was dropped.
    @discardableResult
    func append(_ json: ByteBuffer) -> Bool {
        guard !self.isCompleted, !self.isFull else { return false }
        var json = json
        while json.readableBytes > 0 {
            let view = json.readableBytesView
            let length = view.firstIndex(of: UInt8(ascii: "\n")).map { $0 - view.startIndex } ?? view.count
            if length > 0, self.purpose == .poll {
                guard self.fits(length) else {
                    self.isFull = true
                    return false
                }
                self.remainingBytes -= length + 1
            }
            if length > 0 { self.objects.append(json.readSlice(length: length)!) }
            if json.readableBytes > 0 { json.moveReaderIndex(forwardBy: 1) }
        }
        return true
    }

    /// Takes no more publications: the answer ends with what it has (its position items still go in).
    func stopTaking() {
        self.isFull = true
    }

    /// Adds a small object past the byte limit (a poll's `position` items: one per channel at most).
    func appendPosition(_ json: ByteBuffer) {
        guard !self.isCompleted else { return }
        self.objects.append(json)
    }

    /// Sends the array (once); later calls do nothing.
    func complete() {
        guard let onComplete = self.onComplete else { return }
        self.onComplete = nil
        var body = self.allocator.buffer(capacity: self.objects.reduce(2) { $0 + $1.readableBytes + 1 })
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
extension CollectOutput: Sendable {}
