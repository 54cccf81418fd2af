/// Something a publisher sends benchmark publications through: a WebSocket
/// client connection (`publish` command) or an HTTP API connection
/// (`POST /api/publish`). Used only on its channel's event loop.
protocol PublishEndpoint: AnyObject {
    /// Whether another publication may be written now (open, writable, window not full).
    var canPublish: Bool { get }
    /// Whether the connection is still open.
    var isOpen: Bool { get }
    /// Writes one publication (not flushed); the payload's `ts` is taken now.
    func publish(channel: String, seq: Int64, source: Int?, size: Int)
    func flush()
}
