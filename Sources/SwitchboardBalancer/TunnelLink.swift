import Logging
import NIOCore

/// What the two halves of one tunnel share: the node, byte counts and the time of the last byte either
/// way (read by the loop's `TunnelSweeper`). Touched only on the tunnel's event loop (both channels live on it).
final class TunnelLink {
    let node: BackendNode
    let router: NodeRouter
    let acceptedAt: NIODeadline
    let connectStarted: NIODeadline
    let idleTimeout: TimeAmount
    let logger: Logger
    var bytesToNode: UInt64 = 0
    var bytesFromNode: UInt64 = 0
    var lastActivity: NIODeadline
    var sawResponse = false
    private var sweeper: TunnelSweeper?

    init(
        node: BackendNode, router: NodeRouter, acceptedAt: NIODeadline, connectStarted: NIODeadline, idleTimeout: TimeAmount,
        logger: Logger
    ) {
        self.node = node
        self.logger = logger
        self.acceptedAt = acceptedAt
        self.router = router
        self.connectStarted = connectStarted
        self.idleTimeout = idleTimeout
        self.lastActivity = connectStarted
    }

    /// Bytes arrived from the client.
    func clientSent(_ count: Int) {
        self.bytesToNode &+= UInt64(count)
        self.lastActivity = .now()
    }

    /// Bytes arrived from the node; the first ones give the node's response time, the accept-to-first-byte
    /// time (for a WebSocket: accept to `101`) and the answer's status (server errors count against the node).
    func nodeSent(_ bytes: ByteBuffer) {
        self.bytesFromNode &+= UInt64(bytes.readableBytes)
        let now = NIODeadline.now()
        self.lastActivity = now
        if !self.sawResponse {
            self.sawResponse = true
            let elapsed = Double((now - self.connectStarted).nanoseconds) / 1e9
            let sinceAccept = Double((now - self.acceptedAt).nanoseconds) / 1e9
            let status = Self.status(ofFirstBytes: bytes)
            if let ejection = self.router.firstResponse(self.node, seconds: elapsed, sinceAccept: sinceAccept, status: status) {
                self.logger.info(
                    "node answered with server errors in a row; ejected",
                    metadata: [
                        "node": "\(self.node.id)", "status": "\(status ?? 0)",
                        "ejected": "\(ejection.nanoseconds / 1_000_000_000) s",
                    ])
            }
        }
    }

    /// The status code of an HTTP/1.x answer from its first bytes (`HTTP/1.1 502 ...`), or nil when
    /// they are not (or not yet whole) a status line's start.
    static func status(ofFirstBytes bytes: ByteBuffer) -> Int? {
        let view = bytes.readableBytesView
        guard view.count >= 12 else { return nil }
        let start = view.startIndex
        guard view[start..<(start + 7)].elementsEqual("HTTP/1.".utf8), view[start + 8] == UInt8(ascii: " ") else { return nil }
        if view.count > 12 {
            let after = view[start + 12]
            guard after == UInt8(ascii: " ") || after == UInt8(ascii: "\r") else { return nil }
        }
        var status = 0
        for byte in view[(start + 9)..<(start + 12)] {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
            status = status * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return status
    }

    /// Hands the tunnel to its loop's sweeper, which closes `client` (the node side follows) once
    /// nothing moved for `idleTimeout`.
    func startIdleTimer(client: any Channel, sweeper: TunnelSweeper) {
        self.sweeper = sweeper
        sweeper.add(self, client: client)
    }

    /// The tunnel ended: leave the sweeper, settle the node's counts.
    func closed() {
        self.sweeper?.remove(self)
        self.sweeper = nil
        self.router.tunnelClosed(self.node, bytesToNode: self.bytesToNode, bytesFromNode: self.bytesFromNode)
    }
}
