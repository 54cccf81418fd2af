import Synchronization

/// Deliveries a network broker handed to the node that the node's event loops have not run yet,
/// weighed roughly in bytes; while it is over `limit` the broker reads no more from the network.
///
/// Without it a node slower than its cluster's publication rate queues every publication Redis
/// sends it in its event loops' task queues, without bound, until it runs out of memory. Held back,
/// the publications wait in Redis's output buffer for the connection instead, and past Redis's
/// `client-output-buffer-limit pubsub` Redis closes the connection: the node reconnects and refills
/// its channels from history, as after any interruption. The node adds what it hands from one loop
/// to another and removes it once run; the broker checks the total before each read, and reads
/// again once it is down to half the limit.
public final class DeliveryBacklog: Sendable {
    /// Weight (about bytes) above which reads from the network are held back.
    public let limit: Int
    private let pending = Atomic<Int>(0)
    private let added = Atomic<Int>(0)

    /// The default limit is 64 MiB.
    public init(limit: Int = 64 << 20) {
        self.limit = max(1, limit)
    }

    /// Work of `weight` was queued for a loop.
    @inline(__always)
    public func add(_ weight: Int) {
        self.pending.wrappingAdd(weight, ordering: .relaxed)
        self.added.wrappingAdd(weight, ordering: .relaxed)
    }

    /// Work of `weight` (as added) has run.
    @inline(__always)
    public func remove(_ weight: Int) {
        self.pending.wrappingSubtract(weight, ordering: .relaxed)
    }

    /// The weight ever added (wrapping), to tell a backlog that was used from one that never was.
    public var totalAdded: Int { self.added.load(ordering: .relaxed) }

    /// The weight queued now.
    public var weight: Int { self.pending.load(ordering: .relaxed) }

    /// Whether reads from the network should wait.
    public var isOverLimit: Bool { self.pending.load(ordering: .relaxed) > self.limit }

    /// Whether reads held back may resume: at half the limit, so they do not flap around it.
    public var isBelowResumeMark: Bool { self.pending.load(ordering: .relaxed) <= self.limit / 2 }
}
