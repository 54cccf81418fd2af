import SwitchboardCore
@_spi(Harness) import SwitchboardRedis

// The invariants of `RedisBroker`'s offset, range and TTL arithmetic, checked by `RedisLikeBroker`
// on every history read and by `FuzzHTTPBodies` on every number of its input. A library of its own
// because an executable target of more than one file needs a `main`, and a fuzz target has none.

/// `precondition` that prints its message in release builds too.
package func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError(message()) }
}

/// `RedisBroker.streamRange`: never traps, starts right after `since` while Redis can hold that
/// id, reads nothing after `Int64.max`, and the id it names reads back as the offset it means.
@discardableResult
package func checkRange(sinceOffset: UInt64?, limit: Int) -> (first: String, count: Int64) {
    let range = RedisBroker.streamRange(sinceOffset: sinceOffset, limit: limit)
    let expectedCount: Int64 = limit < 0 ? -1 : Int64(limit)
    guard let since = sinceOffset else {
        check(range.first == "-" && range.count == expectedCount, "range without since: \(range) for limit \(limit)")
        return range
    }
    if since < UInt64(Int64.max) {
        check(range.count == expectedCount, "count \(range.count) for limit \(limit)")
        check(range.first == "\(since + 1)-0", "first id \(range.first) after offset \(since)")
        check(RedisBroker.offset(ofStreamID: range.first) == since + 1, "stream id \(range.first) does not read back")
    } else {
        check(range.count == 0, "a read after offset \(since) (past Int64.max) asks Redis for \(range.count) entries")
    }
    return range
}

/// `RedisBroker.whole`: a TTL within `1...maximum` for any double.
package func checkWhole(_ value: Double) {
    let maximum = RedisBroker.maximumSeconds
    let seconds = RedisBroker.whole(value)
    check(seconds >= 1 && seconds <= maximum, "TTL \(seconds) for \(value)")
    if value.isFinite, value >= 1, value < Double(maximum) {
        check(Double(seconds) >= value && Double(seconds) - value < 1, "TTL \(seconds) does not round \(value) up")
    }
    let millis = RedisBroker.whole(value, maximum: maximum * 1000)
    check(millis >= 1 && millis <= maximum * 1000, "TTL \(millis) ms for \(value)")
}
