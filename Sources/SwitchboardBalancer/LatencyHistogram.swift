/// A Prometheus-style histogram with fixed buckets (seconds), kept as a value: the router holds one for
/// accept-to-first-byte (for a WebSocket, accept to the node's `101`), observed once per tunnel.
public struct LatencyHistogram: Sendable, Hashable {
    /// Upper bounds in seconds; an implicit `+Inf` bucket follows.
    public static let bounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

    /// Observations per bucket (not cumulative), one more than `bounds` for `+Inf`.
    public private(set) var counts = [UInt64](repeating: 0, count: Self.bounds.count + 1)
    public private(set) var sum: Double = 0
    public private(set) var count: UInt64 = 0

    public init() {}

    /// Counts one observation; a negative or non-finite value counts as 0.
    public mutating func observe(_ seconds: Double) {
        let value = seconds.isFinite && seconds > 0 ? seconds : 0
        let index = Self.bounds.firstIndex { value <= $0 } ?? Self.bounds.count
        self.counts[index] &+= 1
        self.count &+= 1
        self.sum += value
    }

    /// Exposition lines (`_bucket{le=…}` cumulative, `_sum`, `_count`) for `name`.
    public func exposition(_ name: String) -> String {
        var out = ""
        var cumulative: UInt64 = 0
        for (i, bound) in Self.bounds.enumerated() {
            cumulative &+= self.counts[i]
            out += "\(name)_bucket{le=\"\(bound)\"} \(cumulative)\n"
        }
        cumulative &+= self.counts[Self.bounds.count]
        out += "\(name)_bucket{le=\"+Inf\"} \(cumulative)\n"
        out += "\(name)_sum \(self.sum)\n"
        out += "\(name)_count \(self.count)\n"
        return out
    }
}
