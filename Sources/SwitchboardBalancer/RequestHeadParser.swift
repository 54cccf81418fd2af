public import NIOCore

/// Finds and validates an HTTP/1.x request head in the bytes received so far, incrementally: each call
/// scans only the bytes it has not seen, so a head trickled one byte at a time costs O(size), not O(size²).
///
/// Strict on purpose (a balancer that reads heads more leniently than the node behind it invites request
/// smuggling): at most 16 KB and 100 lines; every line ends in CRLF (bare LF, bare CR, NUL refused);
/// `METHOD SP target SP HTTP/1.x`; header names are tokens followed by a colon; no obsolete folding.
public struct RequestHeadParser: Sendable {
    /// Largest head, blank line included.
    public static let maximumBytes = 16 * 1024
    /// Most lines, request line included.
    public static let maximumLines = 100

    /// What the bytes so far amount to.
    public enum Outcome: Sendable {
        /// No complete head yet, nothing wrong so far.
        case needMore
        /// A valid head: its fields and its length in bytes (blank line included).
        case complete(RequestHead)
        /// Refuse the request.
        case invalid(RequestHeadError)
    }

    private var scanned = 0
    private var lineStart = 0
    private var lines: [Range<Int>] = []
    private var failed: RequestHeadError?

    public init() {}

    /// Parses `buffer`'s readable bytes, which must begin with every byte passed before (the caller only
    /// appends to its buffer).
    public mutating func parse(_ buffer: ByteBuffer) -> Outcome {
        if let failed { return .invalid(failed) }
        let outcome = buffer.withUnsafeReadableBytes { bytes -> Outcome in
            while self.scanned < bytes.count {
                let index = self.scanned
                let byte = bytes[index]
                self.scanned += 1
                if index >= Self.maximumBytes { return .invalid(.tooLarge) }
                switch byte {
                case 0: return .invalid(.nulByte)
                case UInt8(ascii: "\n"):
                    guard index >= 1, index - 1 >= self.lineStart, bytes[index - 1] == UInt8(ascii: "\r") else {
                        return .invalid(.bareLineFeed)
                    }
                    let line = self.lineStart..<(index - 1)
                    self.lineStart = index + 1
                    if line.isEmpty {
                        if self.lines.isEmpty { return .invalid(.emptyRequestLine) }
                        return Self.makeHead(bytes: bytes, lines: self.lines, length: index + 1)
                    }
                    self.lines.append(line)
                    if self.lines.count > Self.maximumLines { return .invalid(.tooManyLines) }
                default:
                    if index >= 1, bytes[index - 1] == UInt8(ascii: "\r") { return .invalid(.bareCarriageReturn) }
                }
            }
            return .needMore
        }
        if case .invalid(let error) = outcome { self.failed = error }
        return outcome
    }

    private static func makeHead(bytes: UnsafeRawBufferPointer, lines: [Range<Int>], length: Int) -> Outcome {
        let requestLine = Array(bytes[lines[0]])
        let parts = requestLine.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(Self.isTokenByte),
            !parts[1].isEmpty, parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        else { return .invalid(.badRequestLine) }
        guard parts[2].elementsEqual("HTTP/1.1".utf8) || parts[2].elementsEqual("HTTP/1.0".utf8) else {
            return .invalid(.unsupportedVersion)
        }
        var headers: [RequestHead.Header] = []
        headers.reserveCapacity(lines.count - 1)
        for range in lines.dropFirst() {
            let line = bytes[range]
            guard let first = line.first, first != UInt8(ascii: " "), first != UInt8(ascii: "\t") else {
                return .invalid(.obsoleteLineFolding)
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return .invalid(.missingColon) }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(Self.isTokenByte) else { return .invalid(.badHeaderName) }
            var value = line[(colon + 1)...]
            guard value.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                return .invalid(.badHeaderValue)
            }
            while let f = value.first, f == 0x20 || f == 0x09 { value = value.dropFirst() }
            while let l = value.last, l == 0x20 || l == 0x09 { value = value.dropLast() }
            let nameText = String(decoding: name, as: UTF8.self)
            headers.append(
                RequestHead.Header(
                    name: nameText, lowercasedName: RequestHead.asciiLowercased(nameText),
                    value: String(decoding: value, as: UTF8.self), rawLine: Array(line)))
        }
        return .complete(
            RequestHead(
                method: String(decoding: parts[0], as: UTF8.self),
                target: String(decoding: parts[1], as: UTF8.self),
                version: String(decoding: parts[2], as: UTF8.self),
                requestLine: requestLine, headers: headers, length: length))
    }

    /// RFC 9110 `tchar`.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}
