/// How busy the node is, besides its connection count: the figures a balancer that reads the
/// registry weighs nodes by (docs/balancer.md, "Weights from the registry").
///
/// - CPU: the share of the node's usable cores its process used between two announces (process
///   CPU time ÷ wall time ÷ cores, 0-1). A node that serves heavier clients than its peers, or
///   shares its machine with something busy, shows it here before its connection count does.
/// - Event-loop lag: how late a task queued on each loop ran, the most late loop of the latest
///   probe. A node whose loops fall behind answers everything late, whatever its CPU figure says
///   (a lock, a slow disk for logs, a noisy neighbour).
///
/// A plain value owned by the node's context; the context feeds it readings and announces what
/// it returns. No reading is trusted blindly: a clock or a counter that went backwards, or a
/// reading that is not a finite number, gives no figure rather than a wrong one.
struct NodeLoad {
    /// The cores the node may run on (the CPU share's denominator).
    let cores: Int
    private var lastCPU: (cpuSeconds: Double, wallSeconds: Double)?
    /// The latest complete lag probe, in seconds.
    private(set) var loopLag: Double?
    /// The probe in progress: when it started, loops still to answer, the worst lag among those that did.
    private var probe: (startedAt: Double, pending: Int, worst: Double)?

    init(cores: Int) {
        self.cores = max(1, cores)
    }

    /// Records the process's CPU time at `wallSeconds` (a monotonic clock) and returns the share of
    /// the cores it used since the previous reading; nil for the first reading and for readings
    /// that cannot be right.
    mutating func cpuShare(cpuSeconds: Double?, wallSeconds: Double) -> Double? {
        guard let cpuSeconds, cpuSeconds.isFinite, wallSeconds.isFinite else { return nil }
        defer { self.lastCPU = (cpuSeconds, wallSeconds) }
        guard let last = self.lastCPU else { return nil }
        let wall = wallSeconds - last.wallSeconds
        let used = cpuSeconds - last.cpuSeconds
        guard wall > 0.1, used >= 0 else { return nil }
        return min(1, used / (wall * Double(self.cores)))
    }

    /// Starts a lag probe of `loops` loops at `wallSeconds`; returns false while the previous one is
    /// unanswered (a loop that has not run a task for a whole announce interval: see `lagToAnnounce`).
    mutating func startProbe(loops: Int, wallSeconds: Double) -> Bool {
        guard self.probe == nil, loops > 0 else { return false }
        self.probe = (wallSeconds, loops, 0)
        return true
    }

    /// One loop ran the probe's task `seconds` after it was queued.
    mutating func recordLag(_ seconds: Double) {
        guard var probe = self.probe else { return }
        probe.pending -= 1
        probe.worst = max(probe.worst, seconds.isFinite ? max(0, seconds) : 0)
        if probe.pending == 0 {
            self.loopLag = probe.worst
            self.probe = nil
        } else {
            self.probe = probe
        }
    }

    /// The lag to announce at `wallSeconds`: the latest complete probe's, or, while a probe has been
    /// waiting longer than that, how long it has waited, so a stuck loop is never reported as fine.
    func lagToAnnounce(wallSeconds: Double) -> Double? {
        guard let probe = self.probe else { return self.loopLag }
        let waited = wallSeconds - probe.startedAt
        guard waited.isFinite, waited > (self.loopLag ?? 0) else { return self.loopLag }
        return waited
    }
}
