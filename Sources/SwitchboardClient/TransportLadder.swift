/// Which transport the next connection attempt uses: a plain value, tested without sockets (the
/// browser client's ladder, with the same rules).
///
/// The client moves to the next transport when the current one cannot open and never worked in this
/// client (the upgrade refused, the stream answered with an error), or failed twice in a row without
/// a connect reply. A transport that got a connect reply is kept for the reconnects that follow. After
/// the last transport the ladder wraps to the first; moving on happens at once, wrapping waits for
/// the backoff. While connected over a fallback, the client probes the first transport every
/// `upgradeInterval` and climbs back when it opens.
struct TransportLadder: Equatable {
    /// What ending an attempt did to the ladder.
    enum Move: Equatable {
        /// The next attempt uses the same transport.
        case stay
        /// The next attempt uses the next transport: try it at once.
        case next
        /// Every transport was tried: start over at the first, after the backoff.
        case wrapped
    }

    let transports: [ClientTransport]
    private(set) var index = 0
    /// Attempts on the current transport in a row that got no connect reply.
    private(set) var failuresInRow = 0
    /// The transports that got a connect reply at least once.
    private(set) var worked: Set<ClientTransport> = []

    /// `transports` in order of preference, without repeats; an empty list means WebSocket only.
    init(_ transports: [ClientTransport]) {
        var seen: Set<ClientTransport> = []
        let unique = transports.filter { seen.insert($0).inserted }
        self.transports = unique.isEmpty ? [.webSocket] : unique
    }

    /// The transport in use, or the one the next attempt uses.
    var current: ClientTransport { self.transports[self.index] }

    /// `connect()` after `close()`: failures counted so far no longer count (the position stays).
    mutating func restart() {
        self.failuresInRow = 0
    }

    /// A connect reply came over `current`.
    mutating func connected() {
        self.failuresInRow = 0
        self.worked.insert(self.current)
    }

    /// An attempt or a connection over `current` ended. `opened`: the transport itself opened (the
    /// `101`, the stream's `200`); `wasConnected`: a connect reply came on it.
    mutating func ended(opened: Bool, wasConnected: Bool) -> Move {
        guard !wasConnected else {
            self.failuresInRow = 0
            return .stay
        }
        self.failuresInRow += 1
        let count = self.transports.count
        guard count > 1, (!opened && !self.worked.contains(self.current)) || self.failuresInRow >= 2 else { return .stay }
        self.index = (self.index + 1) % count
        self.failuresInRow = 0
        return self.index == 0 ? .wrapped : .next
    }

    /// Whether a client connected over `current` should probe to climb back to WebSocket.
    var canClimbBack: Bool {
        self.index != 0 && self.transports[0] == .webSocket
    }

    /// The probe opened: the next attempt uses the first transport.
    mutating func climbBack() {
        self.index = 0
        self.failuresInRow = 0
    }
}
