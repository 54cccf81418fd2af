import NIOCore

/// When and how many of this node's clients to ask to move (close 3002) after scale-out: the
/// decision of node-side rebalancing, as a plain value fed connection counts and the time.
///
/// Every tick the node reports its own session count and the counts of the other ready nodes from
/// the broker's registry. The node is *over* when it holds more than (1 + tolerance) × the mean of
/// all ready nodes (itself included). Once it has been over continuously for `hold`, a *round*
/// starts: its size is the node's excess over the mean at that moment (`own - mean`, rounded
/// down), asked to move evenly over `max(window, size / rate)` seconds, so never faster than `rate`
/// per second. A round stops early once the node is down to the mean it started from; when it is
/// over, the node must be over for a full `hold` again before the next round (the registry's
/// figures lag by up to its refresh period, and moved clients need time to land elsewhere).
///
/// A round's mean is an estimate: while clients move, the registry can count some of them twice (on
/// the node they left, whose entry is up to a refresh old, and on the node they reached), so a round
/// may stop a few percent above the real mean: under (1 + ε) × mean, yet enough to leave max/min
/// across nodes above 1 + ε. So for `hold + window + 10` seconds after a round ends the node
/// *settles*: whenever the cluster total has held steady (within 2 %) for `hold` seconds, it looks
/// again with the current figures, not the peak, and if still above (1 + ε/2) × mean it asks one
/// *trim* round of the difference, capped at ε × the round's mean (a dip in the total from clients
/// still in transit must not turn the trim into a second full round). A trim is never followed by
/// another trim.
///
/// Clients asked to move are *in transit* for a while: gone from here, not yet counted by the node
/// they land on (the registry refreshes every 2 s, and a client waits a jittered delay before it
/// reconnects). Computed from the current figures, the mean would dip by the clients in transit and
/// make this node look over again: the planner therefore takes the mean of the largest total it saw
/// within the last `hold + window + 10` seconds (since the total was last at that peak). Clients that really left raise the mean for that
/// long, which errs on the side of moving too few (a later round finishes the job), never too many.
///
/// The shell (`NodeRebalancer`) asks the sessions; which sessions may move (connected long enough
/// ago) is its business, and it reports back how many it really asked (``didAsk(_:)``): a shortfall
/// is asked again on later ticks of the same round.
struct RebalancePlanner: Sendable {
    /// The rebalancing options (`--rebalance-*`).
    struct Settings: Sendable, Hashable {
        /// ε: a node is over when it holds more than (1 + ε) × mean.
        var tolerance: Double = 0.10
        /// Seconds the node must stay over before a round starts.
        var hold: Double = 10
        /// Seconds a round's requests are spread over (longer when `rate` demands it).
        var window: Double = 30
        /// Most clients asked to move per second.
        var rate: Double = 200
    }

    /// One round of asking clients to move.
    struct Round: Sendable, Hashable {
        var started: NIODeadline
        /// Clients this round asks to move in all.
        var size: Int
        /// Clients asked so far.
        var asked: Int
        /// Seconds the round is spread over.
        var duration: Double
        /// The node stops asking once it holds at most this many (the mean when the round started, rounded up).
        var target: Int
        /// A trim after a round (see above): when it ends there is no further trim.
        var isTrim = false
    }

    /// After a round: waiting for the figures to settle before a last look (see above).
    struct Settling: Sendable, Hashable {
        /// When the round ended.
        var ended: NIODeadline
        /// Since when the cluster total has stayed within `low...high`.
        var steadySince: NIODeadline
        var low: Double
        var high: Double
        /// Most clients a trim may ask: ε × the round's target, rounded up.
        var trimCap: Int
    }

    enum Phase: Sendable, Hashable {
        /// At or under the tolerance (or alone).
        case balanced
        /// Over the tolerance since this time.
        case over(since: NIODeadline)
        case moving(Round)
        /// A round ended; a trim may follow.
        case settling(Settling)
    }

    /// What one tick decided.
    struct Step: Sendable, Hashable {
        /// Clients to ask to move now.
        var ask: Int = 0
        /// A round started on this tick.
        var startedRound = false
        /// This node's connections ÷ the mean of the ready nodes (1 when alone or all empty).
        var imbalance: Double = 1
    }

    let settings: Settings
    private(set) var phase: Phase = .balanced
    /// The largest cluster total seen recently, and when: the basis of the mean (see above).
    private var peakTotal: Double = 0
    private var peakAt: NIODeadline?
    /// Set by ``startNow()``: the next tick that finds the node over starts a round without the hold.
    private(set) var skipHold = false

    init(settings: Settings) {
        var settings = settings
        settings.tolerance = max(0, settings.tolerance)
        settings.hold = max(0, settings.hold)
        settings.window = max(0, settings.window)
        settings.rate = max(0.001, settings.rate)
        self.settings = settings
    }

    /// Asks for a round at the next tick that finds the node over, without waiting for the hold
    /// (`POST /api/rebalance`). Ignored while a round runs.
    mutating func startNow() {
        self.skipHold = true
    }

    /// One tick: `own` is this node's connection count, `peers` the other ready nodes' counts.
    mutating func tick(own: Int, peers: [Int], now: NIODeadline) -> Step {
        let own = max(0, own)
        var step = Step()
        guard !peers.isEmpty else {
            self.phase = .balanced
            self.skipHold = false
            return step
        }
        // Doubles: a broken registry's figures must not overflow.
        let total = peers.reduce(Double(own)) { $0 + Double(max(0, $1)) }
        let memory = self.settings.hold + self.settings.window + 10
        if let peakAt = self.peakAt, total < self.peakTotal, Self.seconds(from: peakAt, to: now) <= memory {
            // Keep the recent peak: clients in transit are still counted.
        } else {
            self.peakTotal = total
            self.peakAt = now
        }
        let mean = self.peakTotal / Double(peers.count + 1)
        step.imbalance = mean > 0 ? Double(own) / mean : 1
        let isOver = Double(own) > (1 + self.settings.tolerance) * mean && Double(own) - mean >= 1
        switch self.phase {
        case .balanced:
            guard isOver else {
                self.skipHold = false
                return step
            }
            self.phase = .over(since: now)
            if self.settings.hold == 0 || self.skipHold { self.startRound(own: own, mean: mean, now: now, step: &step) }
        case .settling(var settling):
            if isOver {
                // Over by the full tolerance again: a new round, after a new hold.
                self.phase = .over(since: now)
                if self.settings.hold == 0 || self.skipHold { self.startRound(own: own, mean: mean, now: now, step: &step) }
                return step
            }
            let low = min(settling.low, total), high = max(settling.high, total)
            if high - low > max(2, 0.02 * high) {
                // Clients still on the move somewhere: the steady period starts again.
                settling.steadySince = now
                settling.low = total
                settling.high = total
            } else {
                settling.low = low
                settling.high = high
            }
            // The current figures, not the peak: the peak is what may have counted moving clients twice.
            let current = total / Double(peers.count + 1)
            let excess = Double(own) - current
            if Self.seconds(from: settling.steadySince, to: now) >= self.settings.hold,
                Double(own) > (1 + self.settings.tolerance / 2) * current && excess >= 1
            {
                let size = min(settling.trimCap, Int(min(excess, Double(own)).rounded(.down)))
                self.startRound(own: own, mean: Double(own - size), now: now, step: &step, isTrim: true)
            } else if Self.seconds(from: settling.ended, to: now) > memory {
                self.phase = .balanced  // settled near the mean, or never settled: no trim
            } else {
                self.phase = .settling(settling)
            }
        case .over(let since):
            guard isOver else {
                self.phase = .balanced
                self.skipHold = false
                return step
            }
            if self.skipHold || Self.seconds(from: since, to: now) >= self.settings.hold {
                self.startRound(own: own, mean: mean, now: now, step: &step)
            }
        case .moving(let round):
            let elapsed = Self.seconds(from: round.started, to: now)
            if own <= round.target || (round.asked >= round.size && elapsed >= round.duration) || elapsed >= 2 * round.duration + 10 {
                // Done (or given up on: too few clients could be asked): a new round needs a new hold;
                // after a first round, a last look once the figures have settled.
                if round.isTrim {
                    self.phase = .balanced
                } else {
                    let cap = max(1, Int((self.settings.tolerance * Double(max(0, round.target))).rounded(.up)))
                    self.phase = .settling(.init(ended: now, steadySince: now, low: total, high: total, trimCap: cap))
                }
                return step
            }
            step.ask = Self.quota(of: round, elapsed: elapsed, own: own)
        }
        return step
    }

    /// The shell asked `count` clients to move (at most the tick's `ask`; fewer when too few may move).
    mutating func didAsk(_ count: Int) {
        guard case .moving(var round) = self.phase, count > 0 else { return }
        round.asked += count
        self.phase = .moving(round)
    }

    private mutating func startRound(own: Int, mean: Double, now: NIODeadline, step: inout Step, isTrim: Bool = false) {
        self.skipHold = false
        let size = max(1, Int(min(Double(own) - mean, Double(own)).rounded(.down)))
        let duration = max(self.settings.window, Double(size) / self.settings.rate)
        let round = Round(started: now, size: size, asked: 0, duration: duration, target: own - size, isTrim: isTrim)
        self.phase = .moving(round)
        step.startedRound = true
        step.ask = Self.quota(of: round, elapsed: 0, own: own)
    }

    /// Clients due by `elapsed` seconds into `round` (spread evenly, at least one at the start), less those
    /// asked already, and never more than would take the node under its target.
    private static func quota(of round: Round, elapsed: Double, own: Int) -> Int {
        let due: Int
        if round.duration <= 0 || elapsed >= round.duration {
            due = round.size
        } else {
            due = min(round.size, Int((Double(round.size) * elapsed / round.duration).rounded(.down)) + 1)
        }
        return max(0, min(due - round.asked, own - round.target))
    }

    private static func seconds(from start: NIODeadline, to end: NIODeadline) -> Double {
        Double((end - start).nanoseconds) / 1e9
    }
}
