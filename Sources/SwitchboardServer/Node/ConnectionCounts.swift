/// How many connections the node and each client address hold, and whether one
/// more may come in: the node-wide cap (`--max-connections`) and the per-address
/// cap (`--max-connections-per-ip`).
///
/// A plain value: `ConnectionLimiter` keeps it behind a lock on the accept path
/// (never on the fan-out path). The per-address table holds only addresses with
/// a connection open, so it is bounded by the node-wide cap.
struct ConnectionCounts: Sendable, Hashable {
    /// What happens to a new connection.
    enum Admission: Hashable, Sendable {
        /// Counted; `release` must follow when it closes.
        case admitted
        /// Not counted: the node holds its maximum.
        case nodeFull
        /// Not counted: this address holds its maximum.
        case addressFull
    }

    let maximum: Int
    let maximumPerAddress: Int
    private(set) var total = 0
    private(set) var byAddress: [String: Int] = [:]

    init(maximum: Int, maximumPerAddress: Int) {
        self.maximum = max(1, maximum)
        self.maximumPerAddress = max(1, maximumPerAddress)
    }

    /// - Parameter capped: whether the per-address cap applies (not to a trusted proxy's address).
    mutating func admit(address: String, capped: Bool = true) -> Admission {
        guard self.total < self.maximum else { return .nodeFull }
        let current = self.byAddress[address, default: 0]
        guard !capped || current < self.maximumPerAddress else { return .addressFull }
        self.byAddress[address] = current + 1
        self.total += 1
        return .admitted
    }

    /// An admitted connection closed.
    mutating func release(address: String) {
        guard let current = self.byAddress[address] else { return }
        self.byAddress[address] = current > 1 ? current - 1 : nil
        self.total -= 1
    }
}
