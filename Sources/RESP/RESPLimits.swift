/// How much a `RESPTokenDecoder` accepts before it refuses a value.
///
/// Every limit is checked as soon as the bytes that break it arrive (a bulk string's length at its
/// header, before its payload), so a hostile peer cannot make the decoder buffer beyond them.
public struct RESPLimits: Hashable, Sendable {
    /// How deeply aggregates (arrays, maps, sets, pushes, attributes) may nest; a top-level array
    /// is depth 1.
    public var maximumDepth: Int
    /// The longest bulk string, bulk error or verbatim string payload, in bytes.
    public var maximumBulkLength: Int
    /// The most elements an array, set or push, or entries a map or attribute, may declare; also
    /// the most attributes one aggregate may hold among its elements.
    public var maximumAggregateCount: Int
    /// The longest simple string, simple error, double or big number, in bytes without the type
    /// byte and CRLF. (Integers and lengths are refused past 20 characters, which no `Int64`
    /// needs.)
    public var maximumSimpleLength: Int

    public init(
        maximumDepth: Int = 32,
        maximumBulkLength: Int = 64 * 1024 * 1024,
        maximumAggregateCount: Int = 1_048_576,
        maximumSimpleLength: Int = 64 * 1024
    ) {
        self.maximumDepth = maximumDepth
        self.maximumBulkLength = maximumBulkLength
        self.maximumAggregateCount = maximumAggregateCount
        self.maximumSimpleLength = maximumSimpleLength
    }
}
