#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Cheap byte tests on incoming frames. The bench never parses a whole
/// frame as JSON on the hot path: it splits a frame on `\n`, classifies each
/// object by a prefix or key, and pulls integers out by key (`"seq"`,
/// `"ts"`, `"offset"`), as the shared wsbench does, so every target pays
/// the same small cost per message.
enum FrameScanner {
    /// Calls `body` with every non-blank `\n`-separated object of `bytes`.
    static func forEachLine(_ bytes: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        guard let base = bytes.baseAddress else { return }
        var start = 0
        let count = bytes.count
        while start < count {
            let end: Int
            if let newline = memchr(base + start, Int32(UInt8(ascii: "\n")), count - start) {
                end = base.distance(to: UnsafeRawPointer(newline))
            } else {
                end = count
            }
            var lo = start
            var hi = end
            while lo < hi, Self.isSpace(bytes[lo]) { lo += 1 }
            while hi > lo, Self.isSpace(bytes[hi - 1]) { hi -= 1 }
            if hi > lo { body(UnsafeRawBufferPointer(rebasing: bytes[lo..<hi])) }
            start = end + 1
        }
    }

    @inline(__always)
    static func isSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n")
    }

    static func hasPrefix(_ bytes: UnsafeRawBufferPointer, _ prefix: StaticString) -> Bool {
        let length = prefix.utf8CodeUnitCount
        guard bytes.count >= length else { return false }
        let p = prefix.utf8Start
        for i in 0..<length where bytes[i] != p[i] { return false }
        return true
    }

    /// Whether `needle` occurs in `bytes`.
    static func contains(_ bytes: UnsafeRawBufferPointer, _ needle: StaticString) -> Bool {
        Self.find(bytes, needle, from: 0) != nil
    }

    static func find(_ bytes: UnsafeRawBufferPointer, _ needle: StaticString, from: Int) -> Int? {
        let length = needle.utf8CodeUnitCount
        guard length > 0, from >= 0, let base = bytes.baseAddress, bytes.count - from >= length else { return nil }
        let first = Int32(needle.utf8Start[0])
        let last = bytes.count - length
        var i = from
        while i <= last {
            guard let hit = memchr(base + i, first, last - i + 1) else { return nil }
            let at = base.distance(to: UnsafeRawPointer(hit))
            if memcmp(base + at, needle.utf8Start, length) == 0 { return at }
            i = at + 1
        }
        return nil
    }

    /// The integer starting at `index` (optional minus, then digits) and the index after it.
    static func integer(_ bytes: UnsafeRawBufferPointer, at index: Int) -> (value: Int64, end: Int)? {
        var j = index
        var negative = false
        if j < bytes.count, bytes[j] == UInt8(ascii: "-") {
            negative = true
            j += 1
        }
        var value: Int64 = 0
        let start = j
        while j < bytes.count, bytes[j] >= UInt8(ascii: "0"), bytes[j] <= UInt8(ascii: "9"), j - start < 19 {
            value = value &* 10 &+ Int64(bytes[j] &- UInt8(ascii: "0"))
            j += 1
        }
        guard j > start else { return nil }
        return (negative ? -value : value, j)
    }

    /// Whether `bytes` holds `text` at `index`.
    static func matches(_ bytes: UnsafeRawBufferPointer, _ text: StaticString, at index: Int) -> Bool {
        let length = text.utf8CodeUnitCount
        guard index >= 0, index + length <= bytes.count else { return false }
        let t = text.utf8Start
        for k in 0..<length where bytes[index + k] != t[k] { return false }
        return true
    }

    /// The integer after the first `KEY:` (key given with its quotes, such as
    /// `"seq"`); occurrences of the text that are not followed by a colon are
    /// skipped. Whitespace around the colon is allowed.
    static func integer(_ bytes: UnsafeRawBufferPointer, key: StaticString) -> Int64? {
        var from = 0
        let keyLength = key.utf8CodeUnitCount
        while let at = Self.find(bytes, key, from: from) {
            from = at + 1
            var j = at + keyLength
            while j < bytes.count, bytes[j] == UInt8(ascii: " ") || bytes[j] == UInt8(ascii: "\t") { j += 1 }
            guard j < bytes.count, bytes[j] == UInt8(ascii: ":") else { continue }
            j += 1
            while j < bytes.count, bytes[j] == UInt8(ascii: " ") || bytes[j] == UInt8(ascii: "\t") { j += 1 }
            var negative = false
            if j < bytes.count, bytes[j] == UInt8(ascii: "-") { negative = true; j += 1 }
            var value: Int64 = 0
            var digits = 0
            while j < bytes.count, bytes[j] >= UInt8(ascii: "0"), bytes[j] <= UInt8(ascii: "9"), digits < 19 {
                value = value &* 10 &+ Int64(bytes[j] &- UInt8(ascii: "0"))
                digits += 1
                j += 1
            }
            guard digits > 0 else { continue }
            return negative ? -value : value
        }
        return nil
    }
}
