import NIOCore

/// What the two halves of one tunnel share: the node, byte counts and the time of the last byte either
/// way (read by the loop's `TunnelSweeper`). Touched only on the tunnel's event loop (both channels live on it).
final class TunnelLink {
    let node: BackendNode
    let router: NodeRouter
    let acceptedAt: NIODeadline
    let connectStarted: NIODeadline
    let idleTimeout: TimeAmount
    var bytesToNode: UInt64 = 0
    var bytesFromNode: UInt64 = 0
    var lastActivity: NIODeadline
    var sawResponse = false
    private var sweeper: TunnelSweeper?

    init(node: BackendNode, router: NodeRouter, acceptedAt: NIODeadline, connectStarted: NIODeadline, idleTimeout: TimeAmount) {
        self.node = node
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

    /// Bytes arrived from the node; the first ones give the node's response time and the accept-to-first-byte
    /// time (for a WebSocket: accept to `101`).
    func nodeSent(_ count: Int) {
        self.bytesFromNode &+= UInt64(count)
        let now = NIODeadline.now()
        self.lastActivity = now
        if !self.sawResponse {
            self.sawResponse = true
            let elapsed = Double((now - self.connectStarted).nanoseconds) / 1e9
            let sinceAccept = Double((now - self.acceptedAt).nanoseconds) / 1e9
            self.router.firstResponse(self.node, seconds: elapsed, sinceAccept: sinceAccept)
        }
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
