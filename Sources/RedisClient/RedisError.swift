/// A failure talking to Redis.
public struct RedisError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { self.name }

        /// The server answered with an error reply (`message` holds it, e.g. "NOSCRIPT ...").
        public static let server = Code(name: "server")
        /// No connection (never made, lost, or closed by us).
        public static let connectionClosed = Code(name: "connectionClosed")
        /// A reply did not come within the command timeout.
        public static let timeout = Code(name: "timeout")
        /// The server sent bytes that are not RESP, or a reply of an unexpected shape.
        public static let protocolError = Code(name: "protocolError")
        /// Too many commands are waiting for Redis (`RedisConfiguration.maximumPendingCommands` or
        /// `maximumPendingBytes`): Redis is slow or stalled. Nothing was sent; retry later.
        public static let overloaded = Code(name: "overloaded")
        /// The configuration cannot work (bad URL, TLS asked for).
        public static let invalidConfiguration = Code(name: "invalidConfiguration")
    }

    public var code: Code
    public var message: String
    /// Whether the command never left this process (no connection to write it on, or the client
    /// closed): sending it again, elsewhere, cannot run it twice.
    public internal(set) var wasNotSent = false

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "redis \(self.code): \(self.message)" }

    /// Whether trying again later may succeed (Redis unreachable, slow or overloaded), as opposed to
    /// a refusal of the command itself. Servers report these as "temporarily unavailable" (error 100).
    public var isRetryable: Bool {
        self.code == .connectionClosed || self.code == .timeout || self.code == .overloaded || self.isClusterUnavailable
    }

    /// Whether this is a `NOSCRIPT` reply (the script cache was flushed or never loaded).
    public var isNoScript: Bool { self.code == .server && self.message.hasPrefix("NOSCRIPT") }
}
