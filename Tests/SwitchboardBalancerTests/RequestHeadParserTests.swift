import NIOCore
import Testing

@testable import SwitchboardBalancer

@Suite struct RequestHeadParserTests {
    static let upgrade =
        "GET /ws?channel=chat%3Alobby&x=1 HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "X-Forwarded-For: 6.6.6.6\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"

    func parse(_ text: String) -> RequestHeadParser.Outcome {
        var parser = RequestHeadParser()
        return parser.parse(ByteBuffer(string: text))
    }

    func head(_ text: String) throws -> RequestHead {
        guard case .complete(let head) = self.parse(text) else {
            Issue.record("not complete: \(self.parse(text))")
            throw RequestHeadError.badRequestLine
        }
        return head
    }

    func error(_ bytes: [UInt8]) -> RequestHeadError? {
        var parser = RequestHeadParser()
        if case .invalid(let e) = parser.parse(ByteBuffer(bytes: bytes)) { return e }
        return nil
    }

    @Test func parsesAnUpgradeRequest() throws {
        let head = try self.head(Self.upgrade + "early frame bytes")
        #expect(head.method == "GET")
        #expect(head.path == "/ws")
        #expect(head.queryValue("channel") == "chat:lobby")
        #expect(head.queryValue("missing") == nil)
        #expect(head.isUpgrade)
        #expect(head.length == Self.upgrade.utf8.count)
        #expect(head.hashKey(.channel, clientAddress: "10.0.0.1") == "chat:lobby")
        #expect(head.hashKey(.client, clientAddress: "10.0.0.1") == "10.0.0.1")
    }

    @Test func byteByByteGivesTheSameHead() throws {
        var parser = RequestHeadParser()
        var buffer = ByteBuffer()
        var result: RequestHead?
        for byte in Self.upgrade.utf8 {
            buffer.writeInteger(byte)
            switch parser.parse(buffer) {
            case .needMore: continue
            case .complete(let head): result = head
            case .invalid(let e): Issue.record("invalid \(e)")
            }
        }
        #expect(result == (try self.head(Self.upgrade)))
    }

    @Test func refusesMalformedHeads() {
        let cases: [(String, [UInt8], RequestHeadError)] = [
            ("bare LF", Array("GET / HTTP/1.1\nHost: a\r\n\r\n".utf8), .bareLineFeed),
            ("bare LF in header", Array("GET / HTTP/1.1\r\nHost: a\n\r\n".utf8), .bareLineFeed),
            ("bare CR", Array("GET / HTTP/1.1\rHost: a\r\n\r\n".utf8), .bareCarriageReturn),
            ("NUL", Array("GET / HTTP/1.1\r\nHost: a\u{0}b\r\n\r\n".utf8), .nulByte),
            ("no colon", Array("GET / HTTP/1.1\r\nHost a\r\n\r\n".utf8), .missingColon),
            ("space before colon", Array("GET / HTTP/1.1\r\nHost : a\r\n\r\n".utf8), .badHeaderName),
            ("folding", Array("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n".utf8), .obsoleteLineFolding),
            ("HTTP/2 preface", Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8), .unsupportedVersion),
            ("two spaces", Array("GET  / HTTP/1.1\r\n\r\n".utf8), .badRequestLine),
            ("empty first line", Array("\r\nGET / HTTP/1.1\r\n\r\n".utf8), .emptyRequestLine),
            ("control in value", Array("GET / HTTP/1.1\r\nA: b\u{1}\r\n\r\n".utf8), .badHeaderValue),
            ("TLS hello", [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x0d, 0x0a], .nulByte),
        ]
        for (name, bytes, expected) in cases {
            #expect(self.error(bytes) == expected, "\(name)")
        }
    }

    @Test func refusesHeadsOverSixteenKilobytesOrAHundredLines() {
        let big = "GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 17_000)
        #expect(self.error(Array(big.utf8)) == .tooLarge)
        let lines = "GET / HTTP/1.1\r\n" + String(repeating: "A: b\r\n", count: 100) + "\r\n"
        #expect(self.error(Array(lines.utf8)) == .tooManyLines)
        let ninetyNine = "GET / HTTP/1.1\r\n" + String(repeating: "A: b\r\n", count: 99) + "\r\n"
        #expect(throws: Never.self) { _ = try self.head(ninetyNine) }
        // Exactly 16 KB is allowed.
        let prefix = "GET / HTTP/1.1\r\nX: "
        let exact = prefix + String(repeating: "a", count: RequestHeadParser.maximumBytes - prefix.utf8.count - 4) + "\r\n\r\n"
        #expect(exact.utf8.count == RequestHeadParser.maximumBytes)
        #expect(throws: Never.self) { _ = try self.head(exact) }
    }

    @Test func incompleteHeadNeedsMore() {
        if case .needMore = self.parse("GET / HTTP/1.1\r\nHost: a\r\n") {} else { Issue.record("expected needMore") }
        if case .needMore = self.parse("GET / HTTP/1.1\r") {} else { Issue.record("expected needMore") }
    }

    @Test func extractsTheUnverifiedJWTSubject() throws {
        // {"alg":"HS256","typ":"JWT"} . {"sub":"alice","exp":1} . signature (not checked)
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.c2ln"
        let fromHeader = try self.head("GET /ws HTTP/1.1\r\nAuthorization: Bearer \(token)\r\n\r\n")
        #expect(fromHeader.unverifiedSubject == "alice")
        #expect(fromHeader.hashKey(.user, clientAddress: nil) == "alice")
        let fromQuery = try self.head("GET /ws?token=\(token) HTTP/1.1\r\n\r\n")
        #expect(fromQuery.unverifiedSubject == "alice")
        let garbage = try self.head("GET /ws?token=a.b.c HTTP/1.1\r\n\r\n")
        #expect(garbage.unverifiedSubject == nil)
        #expect(try self.head("GET /ws HTTP/1.1\r\n\r\n").unverifiedSubject == nil)
    }

    @Test func percentDecodingIsBounded() throws {
        #expect(try self.head("GET /?channel=%zz HTTP/1.1\r\n\r\n").queryValue("channel") == nil)
        #expect(try self.head("GET /?channel=%ff HTTP/1.1\r\n\r\n").queryValue("channel") == nil)  // not UTF-8
        let long = String(repeating: "a", count: RequestHead.maximumKeyLength + 1)
        #expect(try self.head("GET /?channel=\(long) HTTP/1.1\r\n\r\n").queryValue("channel") == nil)
    }

    @Test func forwardedHeadStripsClientClaimsAndAddsOurs() throws {
        let head = try self.head(Self.upgrade)
        var out = ByteBuffer()
        head.forwardedHead(clientAddress: "10.1.2.3", proto: "http", into: &out)
        let text = String(buffer: out)
        #expect(!text.contains("6.6.6.6"))
        #expect(text.hasPrefix("GET /ws?channel=chat%3Alobby&x=1 HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\n"))
        #expect(text.hasSuffix("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n"))
        #expect(text.contains("Connection: Upgrade\r\n"))

        let plain = try self.head("GET /api HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nx-forwarded-proto: https\r\n\r\n")
        var out2 = ByteBuffer()
        plain.forwardedHead(clientAddress: "10.1.2.3", proto: "http", into: &out2)
        #expect(String(buffer: out2) == "GET /api HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n")
    }

    @Test func headerNamesMatchInAnyCase() throws {
        let head = try self.head(
            "GET /ws HTTP/1.1\r\nHOST: a\r\nupgrade: WebSocket\r\nCONNECTION: Keep-Alive, UPGRADE\r\n"
                + "X-FORWARDED-FOR: 6.6.6.6\r\nforwarded: for=6.6.6.6\r\nAuthorization: Bearer t\r\n\r\n")
        #expect(head.isUpgrade)
        #expect(head.header("Host") == "a")
        #expect(head.header("UPGRADE") == "WebSocket")
        #expect(head.header("authorization") == "Bearer t")
        #expect(head.headers.map(\.lowercasedName) == ["host", "upgrade", "connection", "x-forwarded-for", "forwarded", "authorization"])
        var out = ByteBuffer()
        head.forwardedHead(clientAddress: "10.1.2.3", proto: "http", into: &out)
        let text = String(buffer: out)
        #expect(!text.contains("6.6.6.6"))
        #expect(text.contains("CONNECTION: Keep-Alive, UPGRADE\r\n"))
    }

    @Test func headerNamesAreTokens() throws {
        // Every RFC 9110 tchar is allowed in a name; separators are not.
        let head = try self.head("GET / HTTP/1.1\r\nX!#$%&'*+-.^_`|~9: v\r\n\r\n")
        #expect(head.headers.first?.name == "X!#$%&'*+-.^_`|~9")
        for separator in ["(", ")", ",", "/", ";", "<", "=", ">", "?", "@", "[", "\\", "]", "{", "}", "\""] {
            #expect(self.error(Array("GET / HTTP/1.1\r\nX\(separator)Y: v\r\n\r\n".utf8)) == .badHeaderName, "\(separator)")
        }
        #expect(self.error(Array("GE(T / HTTP/1.1\r\n\r\n".utf8)) == .badRequestLine)
        #expect(self.error(Array("GET / HTTP/1.2\r\n\r\n".utf8)) == .unsupportedVersion)
        #expect(try self.head("GET / HTTP/1.0\r\n\r\n").version == "HTTP/1.0")
    }
}
