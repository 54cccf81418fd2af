/// When a subscriber connection should stop reading and when it may read again: its owner's say on
/// how much it can take in (a node behind on its deliveries).
///
/// Two tests, not one, so that reads do not flap at a single mark: reads stop once `shouldHold`
/// says so and resume only once `mayResume` does, which owners make a lower mark.
public struct RedisReadHold: Sendable {
    /// Reads should stop for now.
    public var shouldHold: @Sendable () -> Bool
    /// Held reads may resume.
    public var mayResume: @Sendable () -> Bool

    public init(shouldHold: @escaping @Sendable () -> Bool, mayResume: @escaping @Sendable () -> Bool) {
        self.shouldHold = shouldHold
        self.mayResume = mayResume
    }
}
