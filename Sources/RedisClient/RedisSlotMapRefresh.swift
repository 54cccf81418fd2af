import NIOCore

/// When a `RedisClusterClient` reads the slot map: at once when asked, unless a read is under way or
/// one began less than `minimumInterval` ago; then one read is scheduled for when the interval is up,
/// however many times it is asked meanwhile. A failover or a resharding makes every command ask
/// (`MOVED`, lost connections): this keeps that to one `CLUSTER SLOTS` a second. A plain value whose
/// events return actions, tested without a cluster.
struct RedisSlotMapRefresh: Equatable {
    enum State: Equatable {
        /// No read under way; `lastStarted` is when the last one began (nil: none yet, or long enough ago).
        case idle(lastStarted: NIODeadline?)
        /// A read is under way.
        case reading(started: NIODeadline)
        /// A read is due at `deadline` (the timer is set).
        case scheduled(deadline: NIODeadline)
    }

    enum Action: Equatable {
        /// Read the map now (ask the nodes in turn).
        case read
        /// Set a timer for `deadline`, then call `timerFired`.
        case schedule(deadline: NIODeadline)
        case none
    }

    let minimumInterval: TimeAmount
    private(set) var state = State.idle(lastStarted: nil)

    init(minimumInterval: TimeAmount) {
        self.minimumInterval = minimumInterval
    }

    /// Something suggests the map is old.
    mutating func requested(now: NIODeadline) -> Action {
        switch self.state {
        case .reading, .scheduled:
            return .none
        case .idle(let lastStarted):
            if let lastStarted, now - lastStarted < self.minimumInterval {
                let deadline = lastStarted + self.minimumInterval
                self.state = .scheduled(deadline: deadline)
                return .schedule(deadline: deadline)
            }
            self.state = .reading(started: now)
            return .read
        }
    }

    /// The scheduled read is due.
    mutating func timerFired(now: NIODeadline) -> Action {
        guard case .scheduled = self.state else { return .none }
        self.state = .reading(started: now)
        return .read
    }

    /// The read ended (a map installed, or no node answered).
    mutating func finished() {
        guard case .reading(let started) = self.state else { return }
        self.state = .idle(lastStarted: started)
    }
}
