/// How many connections the node and each client address hold, and whether one
/// more may come in: the node-wide cap (`--max-connections`), the per-address
/// cap (`--max-connections-per-ip`) and the per-address rate of new connections
/// (`limits.connectsPerIPPerSecond`).
///
/// A plain value: `ConnectionLimiter` keeps it behind a lock on the accept path
/// (never on the fan-out path). The per-address table holds only addresses with
/// a connection open, so it is bounded by the node-wide cap; the rate table only
/// the addresses that connected in the current second (it is emptied when the
/// second changes), so it is bounded by what one second's accepts can bring.
struct ConnectionCounts: Sendable, Hashable {
    /// What happens to a new connection.
    enum Admission: Hashable, Sendable {
        /// Counted; `release` must follow when it closes.
        case admitted
        /// Not counted: the node holds its maximum.
        case nodeFull
        /// Not counted: this address holds its maximum.
        case addressFull
        /// Not counted: this address opened its most new connections this second (503, `Retry-After`).
        case addressRate
    }

    let maximum: Int
    let maximumPerAddress: Int
    /// New connections one address may open per second; 0: no limit.
    let connectsPerAddressPerSecond: Int
    private(set) var total = 0
    private(set) var byAddress: [String: Int] = [:]
    /// The second `connectsThisSecond` counts (uptime seconds).
    private var rateSecond: UInt64 = 0
    private(set) var connectsThisSecond: [String: Int] = [:]
    /// Connections refused for the rate this second, by address (`sheds` reads it).
    private(set) var refusedThisSecond: [String: Int] = [:]

    init(maximum: Int, maximumPerAddress: Int, connectsPerAddressPerSecond: Int = 0) {
        self.maximum = max(1, maximum)
        self.maximumPerAddress = max(1, maximumPerAddress)
        self.connectsPerAddressPerSecond = max(0, connectsPerAddressPerSecond)
    }

    /// - Parameters:
    ///   - capped: whether the per-address cap and rate apply (not to a trusted proxy's address).
    ///   - second: the current second on a monotonic clock (for the connect rate).
    mutating func admit(address: String, capped: Bool = true, second: UInt64 = 0) -> Admission {
        guard self.total < self.maximum else { return .nodeFull }
        let limitsRate = capped && self.connectsPerAddressPerSecond > 0
        var connects = 0
        if limitsRate {
            self.roll(to: second)
            connects = self.connectsThisSecond[address, default: 0]
            guard connects < self.connectsPerAddressPerSecond else {
                self.refusedThisSecond[address, default: 0] += 1
                return .addressRate
            }
        }
        let current = self.byAddress[address, default: 0]
        guard !capped || current < self.maximumPerAddress else { return .addressFull }
        if limitsRate { self.connectsThisSecond[address] = connects + 1 }
        self.byAddress[address] = current + 1
        self.total += 1
        return .admitted
    }

    /// Whether a connection from `address` should be dropped as it is accepted, unread and unanswered:
    /// the address has opened its allowance of connections this second and been refused as many again
    /// with an answer (`addressRate`: a 503 or close 3504 with a reason), so what it opens now is a
    /// flood, and answering each connection would cost the node more than the flood costs its source.
    /// Never for a trusted proxy's address (`capped` false) or without a connect rate.
    mutating func sheds(address: String, capped: Bool = true, second: UInt64 = 0) -> Bool {
        guard capped, self.connectsPerAddressPerSecond > 0 else { return false }
        self.roll(to: second)
        return self.refusedThisSecond[address, default: 0] >= self.connectsPerAddressPerSecond
    }

    /// Starts the per-second counts afresh when `second` is a new one.
    private mutating func roll(to second: UInt64) {
        guard second != self.rateSecond else { return }
        self.rateSecond = second
        self.connectsThisSecond.removeAll()
        self.refusedThisSecond.removeAll()
    }

    /// An admitted connection closed.
    mutating func release(address: String) {
        guard let current = self.byAddress[address] else { return }
        self.byAddress[address] = current > 1 ? current - 1 : nil
        self.total -= 1
    }
}
