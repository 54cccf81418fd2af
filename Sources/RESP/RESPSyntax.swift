/// The byte that starts every RESP value.
enum RESPType: UInt8 {
    case simpleString = 0x2B  // +
    case simpleError = 0x2D  // -
    case bulkString = 0x24  // $
    case bulkError = 0x21  // !
    case verbatimString = 0x3D  // =
    case integer = 0x3A  // :
    case double = 0x2C  // ,
    case boolean = 0x23  // #
    case bigNumber = 0x28  // (
    case null = 0x5F  // _
    case array = 0x2A  // *
    case set = 0x7E  // ~
    case push = 0x3E  // >
    case map = 0x25  // %
    case attribute = 0x7C  // |

    /// How many values one declared element stands for: maps and attributes count pairs.
    var valuesPerElement: Int {
        switch self {
        case .map, .attribute: 2
        default: 1
        }
    }
}

/// The grammar shared by the decoder, which validates untrusted bytes, and `RESPToken`, which
/// reads bytes the decoder validated. Ranges and indices count from the start of `bytes`.
enum RESPSyntax {
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")

    /// `[+|-]digits` that fits an `Int64`.
    static func integer(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int64? {
        var index = range.lowerBound
        var negative = false
        if index < range.upperBound, bytes[index] == UInt8(ascii: "-") || bytes[index] == UInt8(ascii: "+") {
            negative = bytes[index] == UInt8(ascii: "-")
            index += 1
        }
        guard index < range.upperBound else { return nil }
        var value: Int64 = 0
        while index < range.upperBound {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 10)
            let (next, carry) =
                negative
                ? shifted.subtractingReportingOverflow(Int64(digit))
                : shifted.addingReportingOverflow(Int64(digit))
            guard !overflow, !carry else { return nil }
            value = next
            index += 1
        }
        return value
    }

    /// The length of a bulk string or the count of an aggregate: digits that fit an `Int`, or
    /// `-1` (null). Every other negative number, a sign, and no digits at all are refused.
    static func length(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        if range.count == 2, bytes[range.lowerBound] == UInt8(ascii: "-"), bytes[range.lowerBound + 1] == UInt8(ascii: "1") {
            return -1
        }
        guard !range.isEmpty else { return nil }
        var value = 0
        for index in range {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 10)
            let (next, carry) = shifted.addingReportingOverflow(Int(digit))
            guard !overflow, !carry else { return nil }
            value = next
        }
        return value
    }

    /// `[+|-]digits`, of any size.
    static func isBigNumber(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
        var index = range.lowerBound
        if index < range.upperBound, bytes[index] == UInt8(ascii: "-") || bytes[index] == UInt8(ascii: "+") {
            index += 1
        }
        guard index < range.upperBound else { return false }
        return bytes[index..<range.upperBound].allSatisfy { $0 &- UInt8(ascii: "0") < 10 }
    }

    /// RESP3 double: `[+|-]digits[.digits][(e|E)[+|-]digits]` (at least one mantissa digit),
    /// or `[+|-]inf`, `[+|-]nan`.
    static func double(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Double? {
        guard Self.isDouble(bytes, range) else { return nil }
        return Double(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self))
    }

    private static func isDouble(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
        let end = range.upperBound
        var index = range.lowerBound
        func skipSign() {
            if index < end, bytes[index] == UInt8(ascii: "-") || bytes[index] == UInt8(ascii: "+") {
                index += 1
            }
        }
        func skipDigits() -> Int {
            let start = index
            while index < end, bytes[index] &- UInt8(ascii: "0") < 10 {
                index += 1
            }
            return index - start
        }
        skipSign()
        let word = bytes[index..<end]
        if word.elementsEqual("inf".utf8) || word.elementsEqual("nan".utf8) {
            return true
        }
        var mantissaDigits = skipDigits()
        if index < end, bytes[index] == UInt8(ascii: ".") {
            index += 1
            mantissaDigits += skipDigits()
        }
        guard mantissaDigits > 0 else { return false }
        if index < end, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            skipSign()
            guard skipDigits() > 0 else { return false }
        }
        return index == end
    }

    // MARK: Reading validated bytes

    // These trust the decoder's validation but still check bounds, so that bytes wrongly passed
    // to `RESPToken(validated:)` stop the program instead of being read out of bounds.

    /// The index of the CR that ends the line starting at `index`.
    static func lineEnd(_ bytes: UnsafeRawBufferPointer, from index: Int) -> Int {
        var index = index
        while index < bytes.count, bytes[index] != Self.cr {
            index += 1
        }
        precondition(bytes.count - index >= 2, "RESPToken(validated:) was given a line without CRLF")
        return index
    }

    static func validatedInteger(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int64 {
        guard let value = Self.integer(bytes, range) else {
            preconditionFailure("RESPToken(validated:) was given an invalid integer")
        }
        return value
    }

    static func validatedLength(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int {
        guard let value = Self.length(bytes, range) else {
            preconditionFailure("RESPToken(validated:) was given an invalid length")
        }
        return value
    }

    /// The index just past `count` complete values starting at `index`, with the attributes
    /// before or inside them.
    static func skipValues(_ count: Int, _ bytes: UnsafeRawBufferPointer, from index: Int) -> Int {
        var index = index
        var pending = count
        while pending > 0 {
            precondition(index < bytes.count, "RESPToken(validated:) was given a truncated aggregate")
            guard let type = RESPType(rawValue: bytes[index]) else {
                preconditionFailure("RESPToken(validated:) was given an unknown RESP type")
            }
            let lineEnd = Self.lineEnd(bytes, from: index + 1)
            let content = index + 1..<lineEnd
            index = lineEnd + 2
            switch type {
            case .bulkString, .bulkError, .verbatimString:
                let length = Self.validatedLength(bytes, content)
                if length >= 0 {
                    precondition(bytes.count - index >= length + 2, "RESPToken(validated:) was given a truncated bulk string")
                    index += length + 2
                }
                pending -= 1
            case .array, .set, .push, .map:
                pending += max(Self.validatedLength(bytes, content), 0) * type.valuesPerElement - 1
            case .attribute:
                // Metadata about the next value, not a value itself.
                pending += Self.validatedLength(bytes, content) * 2
            default:
                pending -= 1
            }
        }
        return index
    }

    /// The index of the first value at or after `index` that is not an attribute.
    static func skipAttributes(_ bytes: UnsafeRawBufferPointer, from index: Int) -> Int {
        var index = index
        while index < bytes.count, bytes[index] == RESPType.attribute.rawValue {
            let lineEnd = Self.lineEnd(bytes, from: index + 1)
            let count = Self.validatedLength(bytes, index + 1..<lineEnd)
            index = Self.skipValues(count * 2, bytes, from: lineEnd + 2)
        }
        return index
    }
}
