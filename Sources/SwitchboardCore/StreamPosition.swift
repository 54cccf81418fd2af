/// A position in a channel's stream: the offset of the last publication and the history's epoch.
public struct StreamPosition: Hashable, Sendable, CustomStringConvertible {
    /// Offset of the last publication (0 before the first one).
    public var offset: UInt64
    /// Names one incarnation of the channel's history; changes when history is lost.
    public var epoch: String

    public init(offset: UInt64, epoch: String) {
        self.offset = offset
        self.epoch = epoch
    }

    public var description: String { "\(self.offset)@\(self.epoch)" }

    /// The largest offset a client may name (`Int64.max`): what Redis stream ids and every
    /// broker can hold, and low enough that `offset + 1` never overflows.
    public static let maximumOffset = UInt64(Int64.max)

    /// Longest epoch a client may name, in bytes (brokers make 8-16 byte epochs).
    public static let maximumEpochLength = 64
}
