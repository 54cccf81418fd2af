import NIOCore

/// What the two halves of one tunnel share: the node, byte counts, the time of the last byte either way,
/// and the idle timer. Touched only on the tunnel's event loop (both channels live on it).
final class TunnelLink {
    let node: BackendNode
    let router: NodeRouter
    let connectStarted: NIODeadline
    let idleTimeout: TimeAmount
    var bytesToNode: UInt64 = 0
    var bytesFromNode: UInt64 = 0
    var lastActivity: NIODeadline
    var sawResponse = false
    private var idleTask: Scheduled<Void>?

    init(node: BackendNode, router: NodeRouter, connectStarted: NIODeadline, idleTimeout: TimeAmount) {
        self.node = node
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

    /// Bytes arrived from the node; the first ones give the node's response time.
    func nodeSent(_ count: Int) {
        self.bytesFromNode &+= UInt64(count)
        let now = NIODeadline.now()
        self.lastActivity = now
        if !self.sawResponse {
            self.sawResponse = true
            let elapsed = Double((now - self.connectStarted).nanoseconds) / 1e9
            self.router.firstResponse(self.node, seconds: elapsed)
        }
    }

    /// Arms the idle timer: when it fires it closes `client` (the node side follows) if nothing moved
    /// for `idleTimeout`, else it re-arms for the rest. One timer per tunnel, re-armed only when it fires.
    func startIdleTimer(client: any Channel) {
        self.scheduleIdleCheck(in: self.idleTimeout, client: client)
    }

    private func scheduleIdleCheck(in delay: TimeAmount, client: any Channel) {
        self.idleTask = client.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            let silent = NIODeadline.now() - self.lastActivity
            if silent >= self.idleTimeout {
                client.close(promise: nil)
            } else {
                self.scheduleIdleCheck(in: self.idleTimeout - silent, client: client)
            }
        }
    }

    /// The tunnel ended: stop the timer, settle the node's counts.
    func closed() {
        self.idleTask?.cancel()
        self.idleTask = nil
        self.router.tunnelClosed(self.node, bytesToNode: self.bytesToNode, bytesFromNode: self.bytesFromNode)
    }
}
