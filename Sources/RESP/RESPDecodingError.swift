/// Why bytes are not RESP; the connection that sent them must be closed.
public struct RESPDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong; new codes can be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidType = "unknown type byte"
            case invalidLength = "invalid length"
            case invalidInteger = "invalid integer"
            case invalidDouble = "invalid double"
            case invalidBoolean = "invalid boolean"
            case invalidVerbatimString = "verbatim string without a format prefix"
            case missingCRLF = "missing CRLF"
            case depthExceeded = "aggregates nested too deeply"
            case bulkTooLong = "bulk string too long"
            case aggregateTooLarge = "aggregate too large"
            case lineTooLong = "line too long"
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// A byte that starts no RESP value.
        public static let invalidType = Code(.invalidType)
        /// A bulk string length or aggregate count that is not digits, or is negative and not `-1`
        /// (`-1`, null, is accepted for `$` and `*` only); also streamed (`?`) lengths.
        public static let invalidLength = Code(.invalidLength)
        /// An integer (or big number) that is not `[+|-]digits`, or does not fit an `Int64`.
        public static let invalidInteger = Code(.invalidInteger)
        /// A double that is neither a decimal number nor `inf`, `-inf`, `nan`.
        public static let invalidDouble = Code(.invalidDouble)
        /// A boolean other than `#t` and `#f`.
        public static let invalidBoolean = Code(.invalidBoolean)
        /// A verbatim string shorter than 4 bytes or without `:` after its 3-letter format.
        public static let invalidVerbatimString = Code(.invalidVerbatimString)
        /// A line or bulk payload not followed by CRLF, or a CR not followed by LF.
        public static let missingCRLF = Code(.missingCRLF)
        /// Aggregates nested deeper than `RESPLimits.maximumDepth`.
        public static let depthExceeded = Code(.depthExceeded)
        /// A bulk length above `RESPLimits.maximumBulkLength`.
        public static let bulkTooLong = Code(.bulkTooLong)
        /// An aggregate count above `RESPLimits.maximumAggregateCount`.
        public static let aggregateTooLarge = Code(.aggregateTooLarge)
        /// A simple line longer than `RESPLimits.maximumSimpleLength`.
        public static let lineTooLong = Code(.lineTooLong)

        public var description: String { self.base.rawValue }
    }

    /// What is wrong.
    public var code: Code
    /// Where, in bytes from the start of the top-level value: the offending byte for
    /// `invalidType`, `missingCRLF` and `lineTooLong`, else the type byte of the value whose
    /// header is wrong.
    public var offset: Int

    public init(_ code: Code, offset: Int) {
        self.code = code
        self.offset = offset
    }

    public var description: String { "RESP decoding error at byte \(self.offset): \(self.code)" }
}
