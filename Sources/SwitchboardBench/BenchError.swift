/// Why a benchmark run could not start or finish.
///
/// Follows the swift-server error pattern: a nested `Code` with static
/// members, so new cases can be added without breaking callers.
public struct BenchError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String

        public init(_ rawValue: String) {
            self.rawValue = rawValue
        }

        public var description: String { self.rawValue }

        /// A flag or configuration value is out of range or inconsistent.
        public static let invalidConfiguration = Code("invalid configuration")
        /// A URL or source address is not on the loopback interface.
        public static let notLoopback = Code("not loopback")
        /// The run would need more sockets than one process may hold.
        public static let tooManySockets = Code("too many sockets")
        /// A worker process failed, exited early or sent something unreadable.
        public static let worker = Code("worker")
        /// A connection could not be set up (publisher, API client).
        public static let connection = Code("connection")
        /// Writing a report file failed.
        public static let output = Code("output")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { self.message }
}
