import NIOConcurrencyHelpers
import NIOCore

/// Prints a progress line every second on long runs (to stderr, or as a
/// worker's progress event), reading counts through `source`.
final class ProgressReporter: Sendable {
    private struct State {
        var phase = "starting"
        var expectedConnections: Int64 = 0
        var expectedDeliveries: Int64 = 0
        var expectedPublications: Int64 = 0
    }

    private let state = NIOLockedValueBox(State())
    private let scenario: BenchScenario
    private let start = NIODeadline.now()

    init(scenario: BenchScenario) {
        self.scenario = scenario
    }

    func set(phase: String) { self.state.withLockedValue { $0.phase = phase } }

    func expect(connections: Int64? = nil, deliveries: Int64? = nil, publications: Int64? = nil) {
        self.state.withLockedValue {
            if let connections { $0.expectedConnections = connections }
            if let deliveries { $0.expectedDeliveries = deliveries }
            if let publications { $0.expectedPublications = publications }
        }
    }

    /// Runs until cancelled: every second, `source` then `sink`.
    func run(
        source: @escaping @Sendable () async -> ProgressCounts,
        sink: @escaping @Sendable (ProgressCounts, String) -> Void
    ) -> Task<Void, Never> {
        Task {
            var previous = ProgressCounts()
            for _ in 0..<(86_400 * 2) {
                do { try await Task.sleep(nanoseconds: 1_000_000_000) } catch { return }
                if Task.isCancelled { return }
                let counts = await source()
                sink(counts, self.line(counts, previous: previous))
                previous = counts
            }
        }
    }

    func line(_ counts: ProgressCounts, previous: ProgressCounts) -> String {
        let state = self.state.withLockedValue { $0 }
        let seconds = Double((NIODeadline.now() - self.start).nanoseconds) / 1e9
        var parts = ["\(counts.connected)/\(state.expectedConnections) open"]
        if counts.failed > 0 { parts.append("\(counts.failed) failed") }
        if counts.dropped > 0 { parts.append("\(counts.dropped) dropped") }
        if counts.subscribed > 0 { parts.append("\(counts.subscribed) subscribed") }
        if self.scenario == .pingpong {
            if counts.published > 0 {
                parts.append("\(counts.delivered) round trips (\(counts.delivered - previous.delivered)/s)")
            }
            if counts.timedOutRoundTrips > 0 { parts.append("\(counts.timedOutRoundTrips) timed out") }
        } else if self.scenario.publishes {
            if counts.warmed > 0 { parts.append("\(counts.warmed) warm") }
            if counts.published > 0 || state.expectedPublications > 0 {
                parts.append("\(counts.published)/\(state.expectedPublications) published")
            }
            if counts.delivered > 0 || state.expectedDeliveries > 0 {
                parts.append("\(counts.delivered)/\(state.expectedDeliveries) delivered (\(counts.delivered - previous.delivered)/s)")
            }
        } else if counts.connected != previous.connected {
            parts.append("+\(counts.connected - previous.connected)/s")
        }
        if counts.errors > 0 { parts.append("\(counts.errors) errors") }
        return "[\(ResultTable.format(seconds, digits: 0).paddedLeft(to: 4))s] \(self.scenario) \(state.phase): " + parts.joined(separator: ", ")
    }
}
