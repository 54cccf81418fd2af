/// The counts on a progress line; workers send these to the coordinator.
struct ProgressCounts: Sendable, Codable, Hashable {
    var attempted: Int64 = 0
    var connected: Int64 = 0
    var failed: Int64 = 0
    var dropped: Int64 = 0
    var subscribed: Int64 = 0
    var subscribeErrors: Int64 = 0
    var warmed: Int64 = 0
    var published: Int64 = 0
    var delivered: Int64 = 0
    var errors: Int64 = 0
    /// pingpong: round trips given up after `--rt-timeout`.
    var timedOutRoundTrips: Int64 = 0

    static func + (lhs: ProgressCounts, rhs: ProgressCounts) -> ProgressCounts {
        ProgressCounts(
            attempted: lhs.attempted + rhs.attempted, connected: lhs.connected + rhs.connected,
            failed: lhs.failed + rhs.failed, dropped: lhs.dropped + rhs.dropped,
            subscribed: lhs.subscribed + rhs.subscribed, subscribeErrors: lhs.subscribeErrors + rhs.subscribeErrors,
            warmed: lhs.warmed + rhs.warmed,
            published: lhs.published + rhs.published, delivered: lhs.delivered + rhs.delivered,
            errors: lhs.errors + rhs.errors,
            timedOutRoundTrips: lhs.timedOutRoundTrips + rhs.timedOutRoundTrips
        )
    }
}
