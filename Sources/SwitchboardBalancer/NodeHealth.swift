public import NIOCore

/// One node's health: the active check's rise/fall state and passive ejection after connect failures
/// and server errors.
///
/// Active: a node starts up, or (one that joins a running balancer) waiting for its first good check;
/// `fall` consecutive failed checks take it down, `rise` consecutive good ones bring it back (HAProxy's
/// `rise 2 fall 2`). A down node gets no new connections; its open tunnels are left alone. Passive: a
/// connect error, or `serverErrorLimit` first answers in a row that are server errors (Envoy's
/// `consecutive_5xx`), ejects the node for 5 s, doubling with each ejection in a row up to 60 s. A
/// successful connect resets the doubling, except after a server-error ejection, which only a good
/// answer resets. Whether an ejection is allowed at all (never more than half the nodes) is the
/// table's decision, since it needs every node's state.
public struct NodeHealth: Sendable, Hashable {
    /// Thresholds and durations; the defaults are the issue's.
    public struct Policy: Sendable, Hashable {
        public var rise: Int
        public var fall: Int
        public var ejectionBase: TimeAmount
        public var ejectionMaximum: TimeAmount
        /// Server errors in a row (first answers on tunnels) that eject the node.
        public var serverErrorLimit: Int

        public init(
            rise: Int = 2, fall: Int = 2, ejectionBase: TimeAmount = .seconds(5), ejectionMaximum: TimeAmount = .seconds(60),
            serverErrorLimit: Int = 5
        ) {
            self.rise = max(1, rise)
            self.fall = max(1, fall)
            self.serverErrorLimit = max(1, serverErrorLimit)
            self.ejectionBase = ejectionBase
            self.ejectionMaximum = max(ejectionBase, ejectionMaximum)
        }
    }

    /// A change worth logging and counting.
    public enum Transition: Sendable, Hashable {
        case wentDown
        case cameUp
    }

    public let policy: Policy
    /// The active check's verdict: true until `fall` checks in a row fail.
    public private(set) var isUp = true
    private var successesInARow = 0
    private var failuresInARow = 0
    private var serverErrorsInARow = 0
    /// End of the current passive ejection, if any.
    public private(set) var ejectedUntil: NIODeadline?
    /// Length of the next passive ejection.
    public private(set) var nextEjection: TimeAmount
    /// A server-error ejection happened and no good answer came since: the backoff keeps doubling
    /// whatever connects succeed (a node that answers 500 accepts every connect).
    private var serverErrorsUnresolved = false

    /// `awaitingFirstCheck`: the node joined a running balancer (a registry entry, a reload); it takes
    /// connections once one check has passed, not at once (a registry can list a node that is not up yet,
    /// and one that left and came back must show it answers again).
    public init(policy: Policy = Policy(), awaitingFirstCheck: Bool = false) {
        self.policy = policy
        self.nextEjection = policy.ejectionBase
        if awaitingFirstCheck { self.awaitFirstCheck() }
    }

    /// Records a good active check; `.cameUp` when this one completes `rise`.
    public mutating func checkSucceeded() -> Transition? {
        self.failuresInARow = 0
        guard !self.isUp else { return nil }
        self.successesInARow += 1
        guard self.successesInARow >= self.policy.rise else { return nil }
        self.isUp = true
        self.successesInARow = 0
        return .cameUp
    }

    /// Records a failed active check; `.wentDown` when this one completes `fall`.
    public mutating func checkFailed() -> Transition? {
        self.successesInARow = 0
        guard self.isUp else { return nil }
        self.failuresInARow += 1
        guard self.failuresInARow >= self.policy.fall else { return nil }
        self.isUp = false
        self.failuresInARow = 0
        return .wentDown
    }

    /// Records the status of the node's first answer on a tunnel; true when this one completes
    /// `serverErrorLimit` server errors in a row (the caller ejects the node, if the table allows).
    ///
    /// A node that answers every request at once with an error holds no connections, so least
    /// connections would send it more and more clients (a "black hole"); only the active check would
    /// notice, and only if the check's path fails too. Only faults of the node count: 501 and 505 are
    /// answers about the request, and 503 is also what a healthy node answers a client over its
    /// per-address limits (a client must not be able to get a healthy node ejected); a node that is
    /// draining or full answers 503 to the check as well.
    public mutating func answered(status: Int) -> Bool {
        guard Self.isServerFault(status) else {
            self.serverErrorsInARow = 0
            if self.serverErrorsUnresolved, !Self.isServerOverloaded(status) {
                // Answering well again: the server-error backoff starts over.
                self.serverErrorsUnresolved = false
                self.nextEjection = self.policy.ejectionBase
            }
            return false
        }
        self.serverErrorsInARow += 1
        guard self.serverErrorsInARow >= self.policy.serverErrorLimit else { return false }
        self.serverErrorsInARow = 0
        return true
    }

    /// 503: neither a fault nor an answer that shows the node well again.
    static func isServerOverloaded(_ status: Int) -> Bool { status == 503 }

    /// Whether an answer's status blames the node (see `answered(status:)`).
    static func isServerFault(_ status: Int) -> Bool {
        (500...599).contains(status) && status != 501 && status != 503 && status != 505
    }

    /// The node (re-)joined a running balancer: it takes connections again after one good check. Its
    /// ejection, if any, stays.
    public mutating func awaitFirstCheck() {
        self.isUp = false
        self.failuresInARow = 0
        self.successesInARow = self.policy.rise - 1
    }

    /// True while a passive ejection lasts.
    public func isEjected(at now: NIODeadline) -> Bool {
        guard let until = self.ejectedUntil else { return false }
        return now < until
    }

    /// Whether new connections may go to the node now.
    public func isAvailable(at now: NIODeadline) -> Bool { self.isUp && !self.isEjected(at: now) }

    /// What a passive ejection was for: the backoff starts over only when that kind of failure stops
    /// (a node that answers every request with 500 accepts every connect).
    public enum EjectionCause: Sendable, Hashable {
        case connectFailures
        case serverErrors
    }

    /// Ejects the node from `now` for the current backoff and doubles the next one (capped); returns the
    /// ejection's length.
    @discardableResult
    public mutating func eject(at now: NIODeadline, cause: EjectionCause = .connectFailures) -> TimeAmount {
        if cause == .serverErrors { self.serverErrorsUnresolved = true }
        let length = self.nextEjection
        self.ejectedUntil = now + length
        let doubled = TimeAmount.nanoseconds(min(length.nanoseconds, Int64.max / 2) * 2)
        self.nextEjection = min(doubled, self.policy.ejectionMaximum)
        return length
    }

    /// A connection to the node succeeded: the ejection backoff starts over at its base, unless a
    /// server-error ejection has had no good answer since (those come on connections that succeed).
    public mutating func connectSucceeded() {
        guard !self.serverErrorsUnresolved else { return }
        self.nextEjection = self.policy.ejectionBase
    }
}
