public import NIOCore

/// Splits a byte stream into tokens; each token is validated completely (nested aggregates
/// included, within the limits) before it is emitted, so a truncated value waits for more bytes
/// (returns nil) and a hostile one fails as soon as the bytes that break a limit arrive (a bulk
/// string's header, not its payload), without buffering beyond them.
///
/// Validation resumes where it stopped: when a value arrives in pieces, each byte is examined
/// once, so trickled input costs linear time. This relies on the `ByteToMessageDecoder` contract
/// that the buffer passed to the next call holds the same unread bytes plus any new ones.
///
/// The limits bound each part of a value, not the sum of its parts (an array may hold
/// `maximumAggregateCount` bulk strings of `maximumBulkLength` each); to bound the bytes buffered
/// for one value, also give `ByteToMessageHandler` a `maximumBufferSize`.
///
/// After an error the connection must be closed; calling again starts over from the reader index
/// (and throws the same error).
///
/// Attributes at the top level are emitted as their own tokens (see the module overview in
/// `RESPToken.swift`).
public struct RESPTokenDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = RESPToken

    /// The limits every value must stay within.
    public let limits: RESPLimits
    private var progress = Progress()

    public init(limits: RESPLimits = RESPLimits()) {
        self.limits = limits
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> RESPToken? {
        if self.progress.offset > buffer.readableBytes {
            // Not the buffer we saw last time: start over.
            self.progress.reset()
        }
        if let payload = self.progress.payload, buffer.readableBytes - payload.end < 2 {
            // Still waiting for a bulk payload: nothing to look at yet.
            return nil
        }
        let limits = self.limits
        let end: Int?
        do {
            end = try buffer.withUnsafeReadableBytes { bytes throws(RESPDecodingError) in
                try self.progress.advance(over: bytes, limits: limits)
            }
        } catch {
            self.progress.reset()
            throw error
        }
        guard let end else { return nil }
        self.progress.reset()
        return RESPToken(validated: buffer.readSlice(length: end)!)
    }

    /// Decodes like `decode(buffer:)`; a value left incomplete at the end of the stream is not
    /// emitted (its bytes stay in the buffer).
    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPToken? {
        try self.decode(buffer: &buffer)
    }
}

/// How far validation of the value at the reader index has got. Offsets count from the reader index.
private struct Progress {
    /// Where the next header starts (or, with `payload` set, where the pending payload starts).
    var offset = 0
    /// How many bytes of the current header line, after its type byte, hold no CR.
    var scanned = 0
    /// A bulk header that has been read, whose payload and CRLF are awaited.
    var payload: Payload?
    /// The aggregates that are open, innermost last.
    var open: [Frame] = []

    struct Payload {
        /// The type byte of the bulk value.
        var header: Int
        var start: Int
        /// Where the payload ends and its CRLF starts.
        var end: Int
        var isVerbatim: Bool
    }

    struct Frame {
        /// The values still to come (twice the entries for maps and attributes).
        var remaining: Int
        var isAttribute: Bool
        /// The attributes seen among this aggregate's elements.
        var attributes = 0
    }

    /// What a header line may hold.
    struct LineRule {
        enum Alphabet {
            case any
            case integer
            case length
        }

        var maximumLength: Int
        var tooLong: RESPDecodingError.Code
        var alphabet: Alphabet

        init(for type: RESPType, limits: RESPLimits) {
            switch type {
            case .simpleString, .simpleError, .double, .bigNumber:
                self = LineRule(maximumLength: limits.maximumSimpleLength, tooLong: .lineTooLong, alphabet: .any)
            case .integer:
                // "-9223372036854775808" is the longest Int64.
                self = LineRule(maximumLength: 20, tooLong: .invalidInteger, alphabet: .integer)
            case .boolean:
                self = LineRule(maximumLength: 1, tooLong: .invalidBoolean, alphabet: .any)
            case .null:
                self = LineRule(maximumLength: 0, tooLong: .missingCRLF, alphabet: .any)
            case .bulkString, .bulkError, .verbatimString, .array, .set, .push, .map, .attribute:
                self = LineRule(maximumLength: 20, tooLong: .invalidLength, alphabet: .length)
            }
        }

        private init(maximumLength: Int, tooLong: RESPDecodingError.Code, alphabet: Alphabet) {
            self.maximumLength = maximumLength
            self.tooLong = tooLong
            self.alphabet = alphabet
        }

        func allows(_ byte: UInt8) -> Bool {
            switch self.alphabet {
            case .any:
                true
            case .integer:
                byte &- UInt8(ascii: "0") < 10 || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+")
            case .length:
                byte &- UInt8(ascii: "0") < 10 || byte == UInt8(ascii: "-")
            }
        }
    }

    mutating func reset() {
        self.offset = 0
        self.scanned = 0
        self.payload = nil
        self.open.removeAll(keepingCapacity: true)
    }

    /// Validates as far as `bytes` go. Returns the length of the value at the start of `bytes`
    /// once it is complete, nil while it is not.
    mutating func advance(over bytes: UnsafeRawBufferPointer, limits: RESPLimits) throws(RESPDecodingError) -> Int? {
        while true {
            if let payload = self.payload {
                guard bytes.count - payload.end >= 2 else { return nil }
                guard bytes[payload.end] == RESPSyntax.cr else {
                    throw RESPDecodingError(.missingCRLF, offset: payload.end)
                }
                guard bytes[payload.end + 1] == RESPSyntax.lf else {
                    throw RESPDecodingError(.missingCRLF, offset: payload.end + 1)
                }
                if payload.isVerbatim, bytes[payload.start + 3] != UInt8(ascii: ":") {
                    throw RESPDecodingError(.invalidVerbatimString, offset: payload.header)
                }
                self.payload = nil
                self.offset = payload.end + 2
                if self.closeValue(isAttribute: false) { return self.offset }
                continue
            }

            let start = self.offset
            guard start < bytes.count else { return nil }
            guard let type = RESPType(rawValue: bytes[start]) else {
                throw RESPDecodingError(.invalidType, offset: start)
            }
            guard let lineEnd = try self.scanLine(bytes, type: type, start: start, limits: limits) else {
                return nil
            }
            let content = start + 1..<lineEnd
            let next = lineEnd + 2

            switch type {
            case .simpleString, .simpleError, .null:
                break
            case .integer:
                guard RESPSyntax.integer(bytes, content) != nil else {
                    throw RESPDecodingError(.invalidInteger, offset: start)
                }
            case .bigNumber:
                guard RESPSyntax.isBigNumber(bytes, content) else {
                    throw RESPDecodingError(.invalidInteger, offset: start)
                }
            case .double:
                guard RESPSyntax.double(bytes, content) != nil else {
                    throw RESPDecodingError(.invalidDouble, offset: start)
                }
            case .boolean:
                guard content.count == 1, bytes[start + 1] == UInt8(ascii: "t") || bytes[start + 1] == UInt8(ascii: "f") else {
                    throw RESPDecodingError(.invalidBoolean, offset: start)
                }
            case .bulkString, .bulkError, .verbatimString:
                guard let length = RESPSyntax.length(bytes, content), length >= 0 || type == .bulkString else {
                    throw RESPDecodingError(.invalidLength, offset: start)
                }
                guard length >= 0 else { break }  // $-1, null
                guard length <= limits.maximumBulkLength else {
                    throw RESPDecodingError(.bulkTooLong, offset: start)
                }
                guard type != .verbatimString || length >= 4 else {
                    throw RESPDecodingError(.invalidVerbatimString, offset: start)
                }
                let (end, overflow) = next.addingReportingOverflow(length)
                guard !overflow else {
                    throw RESPDecodingError(.bulkTooLong, offset: start)
                }
                self.payload = Payload(header: start, start: next, end: end, isVerbatim: type == .verbatimString)
                self.offset = next
                continue
            case .array, .set, .push, .map, .attribute:
                guard let count = RESPSyntax.length(bytes, content), count >= 0 || type == .array else {
                    throw RESPDecodingError(.invalidLength, offset: start)
                }
                guard count >= 0 else { break }  // *-1, null
                guard count <= limits.maximumAggregateCount else {
                    throw RESPDecodingError(.aggregateTooLarge, offset: start)
                }
                guard self.open.count < limits.maximumDepth else {
                    throw RESPDecodingError(.depthExceeded, offset: start)
                }
                if type == .attribute, !self.open.isEmpty {
                    self.open[self.open.count - 1].attributes += 1
                    guard self.open[self.open.count - 1].attributes <= limits.maximumAggregateCount else {
                        throw RESPDecodingError(.aggregateTooLarge, offset: start)
                    }
                }
                let (values, overflow) = count.multipliedReportingOverflow(by: type.valuesPerElement)
                guard !overflow else {
                    throw RESPDecodingError(.aggregateTooLarge, offset: start)
                }
                self.offset = next
                if values > 0 {
                    self.open.append(Frame(remaining: values, isAttribute: type == .attribute))
                    continue
                }
                if self.closeValue(isAttribute: type == .attribute) { return next }
                continue
            }

            self.offset = next
            if self.closeValue(isAttribute: false) { return next }
        }
    }

    /// Finds the CR ending the header line of the value at `start`, checking the line as it goes.
    /// Returns nil when the line (or the LF after its CR) has not all arrived.
    private mutating func scanLine(
        _ bytes: UnsafeRawBufferPointer,
        type: RESPType,
        start: Int,
        limits: RESPLimits
    ) throws(RESPDecodingError) -> Int? {
        let rule = LineRule(for: type, limits: limits)
        let contentStart = start + 1
        var index = contentStart + self.scanned
        while index < bytes.count {
            let byte = bytes[index]
            if byte == RESPSyntax.cr {
                guard index + 1 < bytes.count else { break }
                guard bytes[index + 1] == RESPSyntax.lf else {
                    throw RESPDecodingError(.missingCRLF, offset: index + 1)
                }
                self.scanned = 0
                return index
            }
            guard index - contentStart < rule.maximumLength else {
                let pointsAtByte = rule.tooLong == .lineTooLong || rule.tooLong == .missingCRLF
                throw RESPDecodingError(rule.tooLong, offset: pointsAtByte ? index : start)
            }
            guard rule.allows(byte) else {
                throw RESPDecodingError(rule.tooLong, offset: start)
            }
            index += 1
        }
        self.scanned = index - contentStart
        return nil
    }

    /// Records that a value ended at `offset`; returns whether it completed the top-level value.
    /// An attribute inside an aggregate is not one of its elements.
    private mutating func closeValue(isAttribute: Bool) -> Bool {
        var closedAttribute = isAttribute
        while !self.open.isEmpty {
            if closedAttribute { return false }
            let innermost = self.open.count - 1
            self.open[innermost].remaining -= 1
            if self.open[innermost].remaining > 0 { return false }
            closedAttribute = self.open.removeLast().isAttribute
        }
        return true
    }
}
