public import NIOCore
internal import SwitchboardCore

/// A validated HTTP/1.x request head: what the balancer routes on and what it forwards.
public struct RequestHead: Sendable, Hashable {
    /// One header line as received.
    public struct Header: Sendable, Hashable {
        public var name: String
        /// `name` in ASCII lower case (header names are tokens: ASCII only), made once by the parser so
        /// that lookups and the forwarding filter compare without lowercasing per call.
        public var lowercasedName: String
        /// Value without surrounding whitespace.
        public var value: String
        /// The whole line as received, without its CRLF (forwarded byte for byte).
        public var rawLine: [UInt8]
    }

    public var method: String
    /// The request target as received (`/ws?channel=a`).
    public var target: String
    /// `HTTP/1.1` or `HTTP/1.0`.
    public var version: String
    public var requestLine: [UInt8]
    public var headers: [Header]
    /// Bytes of the head in the received stream, blank line included.
    public var length: Int

    /// Longest decoded query value or token the balancer looks at.
    public static let maximumKeyLength = 4096

    /// The target's path, without the query.
    public var path: Substring {
        self.target.firstIndex(of: "?").map { self.target[..<$0] } ?? self.target[...]
    }

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        let wanted = Self.asciiLowercased(name)
        return self.headers.first { $0.lowercasedName == wanted }?.value
    }

    /// `text` with ASCII upper-case letters lowered; the text itself when it has none (no copy).
    static func asciiLowercased(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) else { return text }
        return String(decoding: text.utf8.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    /// The percent-decoded value of query parameter `name`, if present, valid UTF-8 and at most
    /// `maximumKeyLength` bytes.
    public func queryValue(_ name: String) -> String? {
        guard let question = self.target.firstIndex(of: "?") else { return nil }
        let query = self.target[self.target.index(after: question)...]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard Self.percentDecode(parts[0]) == name else { continue }
            return parts.count == 2 ? Self.percentDecode(parts[1]) : ""
        }
        return nil
    }

    /// True for a WebSocket (or other protocol) upgrade request.
    public var isUpgrade: Bool {
        guard let upgrade = self.header("upgrade"), !upgrade.isEmpty else { return false }
        return self.header("connection").map(Self.asciiLowercased)?.split(separator: ",").contains {
            $0.trimmingSpaces == "upgrade"
        } ?? false
    }

    /// The token from `Authorization: Bearer …` or the `token` query parameter.
    public var bearerToken: String? {
        if let authorization = self.header("authorization"), authorization.count <= Self.maximumKeyLength,
            authorization.lowercased().hasPrefix("bearer ")
        {
            return String(authorization.dropFirst("bearer ".count)).trimmingSpaces
        }
        return self.queryValue("token")
    }

    /// The `sub` claim of `bearerToken`, decoded but NOT verified: it only chooses a node; the node
    /// verifies the token. Nil when there is no token or it does not decode.
    public var unverifiedSubject: String? {
        guard let token = self.bearerToken, token.utf8.count <= Self.maximumKeyLength else { return nil }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let payload = Base64URL.decode(parts[1]),
            let json = try? JSONParser(maximumDepth: 8, maximumValues: 256).parse(payload),
            let subject = json["sub"]?.stringValue, !subject.isEmpty
        else { return nil }
        return subject
    }

    /// The hashing key for `source`, or nil when the request carries none.
    /// `clientAddress` is only evaluated for `.client` (formatting an address costs an `inet_ntop`).
    public func hashKey(_ source: HashKeySource, clientAddress: @autoclosure () -> String?) -> String? {
        switch source {
        case .channel: return self.queryValue("channel").flatMap { $0.isEmpty ? nil : $0 }
        case .user: return self.unverifiedSubject
        case .client: return clientAddress()
        }
    }

    /// Headers the balancer removes: a client must not be able to claim another address or scheme.
    static let strippedHeaders: Set<String> = ["x-forwarded-for", "x-forwarded-proto", "forwarded"]

    /// The head to send to the node: the request line and every header as received, except incoming
    /// `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded`, followed by the balancer's own
    /// `X-Forwarded-For` and `X-Forwarded-Proto`. A request that is not an upgrade also gets
    /// `Connection: close` in place of its own `Connection`, so the connection carries exactly this one
    /// request: a later request on a kept-alive tunnel would reach the node without being read here.
    /// With `addForwardedHeaders` false (PROXY protocol mode) the incoming ones are still removed but
    /// none are added: the node learns the client from the PROXY header.
    public func forwardedHead(
        clientAddress: String?, proto: String, addForwardedHeaders: Bool = true, into buffer: inout ByteBuffer
    ) {
        let upgrade = self.isUpgrade
        buffer.writeBytes(self.requestLine)
        buffer.writeStaticString("\r\n")
        for header in self.headers {
            let lower = header.lowercasedName
            if Self.strippedHeaders.contains(lower) { continue }
            if !upgrade && (lower == "connection" || lower == "keep-alive") { continue }
            buffer.writeBytes(header.rawLine)
            buffer.writeStaticString("\r\n")
        }
        if !upgrade { buffer.writeStaticString("Connection: close\r\n") }
        guard addForwardedHeaders else {
            buffer.writeStaticString("\r\n")
            return
        }
        if let clientAddress {
            buffer.writeStaticString("X-Forwarded-For: ")
            buffer.writeString(clientAddress)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("X-Forwarded-Proto: ")
        buffer.writeString(proto)
        buffer.writeStaticString("\r\n\r\n")
    }

    /// Decodes `%XX` escapes; nil on a bad escape, invalid UTF-8 or a value over `maximumKeyLength` bytes.
    static func percentDecode(_ text: Substring) -> String? {
        guard text.utf8.count <= Self.maximumKeyLength * 3 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(Self.hexValue), let low = iterator.next().flatMap(Self.hexValue)
                else { return nil }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        guard bytes.count <= Self.maximumKeyLength else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension StringProtocol {
    fileprivate var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
