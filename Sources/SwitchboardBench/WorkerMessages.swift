/// A line from the coordinator to a worker process (stdin, one JSON object per line).
struct WorkerCommand: Sendable, Codable {
    enum Kind: String, Sendable, Codable, Hashable {
        /// First line: the worker's configuration.
        case start
        /// Continue past the current phase (connect/idle: close and report; fanout publisher: publish).
        case go
        /// fanout subscribers: the publishers are done; stop after the idle time.
        case published
        /// Stop now and report what was counted.
        case stop
    }

    var kind: Kind
    var configuration: BenchConfiguration?
}

/// A line from a worker to the coordinator (stdout, one JSON object per line).
struct WorkerEvent: Sendable, Codable {
    enum Kind: String, Sendable, Codable {
        case phase
        case progress
        case result
        case failure
    }

    /// Phases a worker reports.
    enum Phase: String, Sendable, Codable {
        /// connect/idle: every connection is open (and subscribed).
        case connected
        /// fanout subscribers: every subscription is confirmed.
        case subscribed
        /// fanout subscribers: warm (or the warm-up timed out).
        case ready
        /// fanout publishers: every measured publication was sent.
        case published
    }

    var kind: Kind
    var phase: Phase?
    var progress: ProgressCounts?
    var counters: BenchCounters?
    var timedOut: Bool?
    var notes: [String]?
    var message: String?
}
