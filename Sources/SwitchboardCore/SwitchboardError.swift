/// An error a command can fail with, as sent in a reply's `error` object.
///
/// The codes are the protocol's table (one table, used by server and clients
/// alike); new codes can be added without breaking callers.
public struct SwitchboardError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A protocol error code with its default message.
    public struct Code: Hashable, Sendable {
        public let rawValue: Int
        public let defaultMessage: String
        public let isTemporary: Bool

        public init(_ rawValue: Int, _ defaultMessage: String, temporary: Bool = false) {
            self.rawValue = rawValue
            self.defaultMessage = defaultMessage
            self.isTemporary = temporary
        }

        public static let internalError = Code(100, "internal error", temporary: true)
        public static let unauthorized = Code(101, "unauthorized")
        public static let unknownChannel = Code(102, "unknown channel")
        public static let permissionDenied = Code(103, "permission denied")
        public static let methodNotFound = Code(104, "method not found")
        public static let alreadySubscribed = Code(105, "already subscribed")
        public static let limitExceeded = Code(106, "limit exceeded")
        public static let badRequest = Code(107, "bad request")
        public static let notAvailable = Code(108, "not available")
        public static let tokenExpired = Code(109, "token expired")
        public static let tooManyRequests = Code(111, "too many requests", temporary: true)
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String? = nil) {
        self.code = code
        self.message = message ?? code.defaultMessage
    }

    public var description: String { "\(self.code.rawValue) \(self.message)" }

    public static let internalError = SwitchboardError(.internalError)
    public static let permissionDenied = SwitchboardError(.permissionDenied)
    public static let methodNotFound = SwitchboardError(.methodNotFound)
    public static let alreadySubscribed = SwitchboardError(.alreadySubscribed)
    public static let notAvailable = SwitchboardError(.notAvailable)
    public static let unauthorized = SwitchboardError(.unauthorized)

    public static func badRequest(_ message: String) -> SwitchboardError {
        SwitchboardError(.badRequest, message)
    }

    public static func limitExceeded(_ message: String) -> SwitchboardError {
        SwitchboardError(.limitExceeded, message)
    }
}
