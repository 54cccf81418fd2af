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
}
