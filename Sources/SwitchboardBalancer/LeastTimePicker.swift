/// Least response time: the lowest (active + 1) × response time ÷ weight.
///
/// The response time is a node's moving average from connect to the first byte back (for a WebSocket,
/// the 101). A node not yet measured counts as the mean of the measured ones (or 1 ms when none is), so
/// it is neither starved nor flooded before its first answer. Ties rotate.
public struct LeastTimePicker: Sendable {
    private var rotation = 0
    /// Response time assumed when no node has been measured yet, in seconds.
    public static let defaultResponseTime = 0.001

    public init() {}

    /// The index in `candidates` of the node to use, or nil when there is none.
    public mutating func pick(from candidates: [PickCandidate]) -> Int? {
        guard !candidates.isEmpty else { return nil }
        let measured = candidates.compactMap(\.responseTime).filter { $0.isFinite && $0 >= 0 }
        let fallback = measured.isEmpty ? Self.defaultResponseTime : measured.reduce(0, +) / Double(measured.count)
        func score(_ c: PickCandidate) -> Double {
            let time = c.responseTime.flatMap { $0.isFinite && $0 >= 0 ? $0 : nil } ?? fallback
            return Double(c.active + 1) * max(time, 1e-6) / Double(c.weight)
        }
        let start = self.rotation % candidates.count
        self.rotation = (self.rotation &+ 1) & Int.max
        var best = start
        var bestScore = score(candidates[start])
        for step in 1..<candidates.count {
            let index = (start + step) % candidates.count
            let s = score(candidates[index])
            if s < bestScore {
                best = index
                bestScore = s
            }
        }
        return best
    }
}
