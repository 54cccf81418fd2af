/// A broker refused a request as given (as opposed to being unreachable).
public struct BrokerError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { self.name }

        /// The request breaks a limit (for example an idempotency key longer than `BrokerLimits` allows).
        public static let invalidRequest = Code(name: "invalidRequest")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "broker \(self.code): \(self.message)" }
}
