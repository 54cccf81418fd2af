import Foundation
import NIOCore
import NIOPosix
import SwitchboardCore
@testable import SwitchboardServer
import Testing

/// SSE and long-polling on a real node over loopback sockets.
@Suite("SSE and long-polling over loopback", .timeLimit(.minutes(3)))
struct TransportLoopbackTests {
    /// One SSE event: its data and its id.
    struct Event {
        var data: String
        var id: String?
    }

    /// Reads the stream's head, then de-chunks the body into events.
    struct EventStreamReader {
        var client: LoopbackClient
        var body = ByteBuffer()
        var headRead = false

        mutating func next() async throws -> Event? {
            while true {
                if self.headRead, let event = self.takeEvent() { return event }
                guard try await self.client.readMore() else { return nil }
                if !self.headRead {
                    let text = String(buffer: self.client.pending)
                    guard let end = text.range(of: "\r\n\r\n") else { continue }
                    #expect(text.hasPrefix("HTTP/1.1 200"))
                    #expect(text.lowercased().contains("content-type: text/event-stream"))
                    self.client.pending.moveReaderIndex(forwardBy: text[..<end.upperBound].utf8.count)
                    self.headRead = true
                }
                self.dechunk()
            }
        }

        private mutating func dechunk() {
            while let text = self.client.pending.getString(at: self.client.pending.readerIndex, length: self.client.pending.readableBytes),
                let lineEnd = text.range(of: "\r\n") {
                let size = Int(text[..<lineEnd.lowerBound], radix: 16) ?? 0
                let headerBytes = text[..<lineEnd.upperBound].utf8.count
                guard self.client.pending.readableBytes >= headerBytes + size + 2 else { return }
                self.client.pending.moveReaderIndex(forwardBy: headerBytes)
                var chunk = self.client.pending.readSlice(length: size)!
                self.client.pending.moveReaderIndex(forwardBy: 2)
                self.body.writeBuffer(&chunk)
            }
        }

        private mutating func takeEvent() -> Event? {
            let text = String(buffer: self.body)
            guard let end = text.range(of: "\n\n") else { return nil }
            let block = text[..<end.lowerBound]
            self.body.moveReaderIndex(forwardBy: text[..<end.upperBound].utf8.count)
            var event = Event(data: "")
            for line in block.split(separator: "\n") {
                if line.hasPrefix("data: ") { event.data += line.dropFirst(6) }
                if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)) }
            }
            return event
        }
    }

    static func open(port: Int, group: any EventLoopGroup, query: String = "", lastEventID: String? = nil) async throws -> EventStreamReader {
        let client = try await LoopbackClient.connect(port: port, group: group)
        let header = lastEventID.map { "Last-Event-ID: \($0)\r\n" } ?? ""
        try await client.send("GET /sse\(query) HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\(header)\r\n")
        return EventStreamReader(client: client)
    }

    static func post(port: Int, group: any EventLoopGroup, path: String, body: String) async throws -> (Int, String) {
        var http = try await LoopbackClient.connect(port: port, group: group)
        try await http.send("POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
        return try await http.readHTTPResponse()
    }

    static func session(of event: Event) -> String? {
        guard let range = event.data.range(of: #""session":""#) else { return nil }
        return String(event.data[range.upperBound...].prefix { $0 != "\"" })
    }

    @Test("a stream gets the connect reply, POSTed commands' replies and publications; every event's id holds the positions")
    func streamAndCommands() async throws {
        try await LoopbackNode.run { node, port, group in
            var stream = try await Self.open(port: port, group: group)
            let connected = try #require(try await stream.next())
            #expect(connected.data.hasPrefix(#"{"id":1,"result":{"client":"#))
            #expect(connected.data.contains(#""pong":false"#))
            let session = try #require(Self.session(of: connected))

            let (status, answer) = try await Self.post(port: port, group: group, path: "/sse?session=\(session)", body:
                #"{"id":2,"subscribe":{"channel":"news"}}"# + "\n" + #"{"id":3,"publish":{"channel":"news","data":"hi"}}"#)
            #expect(status == 202)
            #expect(answer == #"{"accepted":2}"#)
            var seen: [Event] = []
            while seen.count < 3, let event = try await stream.next() { seen.append(event) }
            #expect(seen[0].data.hasPrefix(#"{"id":2,"result":"#))
            // The publish reply and the publication itself may come in either order.
            #expect(seen.filter { $0.data.hasPrefix(#"{"id":3,"result":{"offset":1"#) }.count == 1)
            let pub = try #require(seen.first { $0.data.hasPrefix(#"{"channel":"news","pub":{"offset":1"#) })
            let resumed = try ResumeID.decode(Substring(try #require(pub.id)))
            #expect(resumed.map(\.channel) == ["news"])
            #expect(resumed.first?.since?.offset == 1)

            // A bad body is refused whole; the session goes on.
            let (badStatus, badAnswer) = try await Self.post(port: port, group: group, path: "/sse?session=\(session)", body: #"{"id":4,"ping":{}} nonsense"#)
            #expect(badStatus == 400)
            #expect(badAnswer.contains(#""code":107"#))
            let wrongSecret = session.dropLast() + (session.hasSuffix("0") ? "1" : "0")
            let (wrongStatus, _) = try await Self.post(port: port, group: group, path: "/sse?session=\(wrongSecret)", body: #"{"id":5,"ping":{}}"#)
            #expect(wrongStatus == 404)
            let (okStatus, _) = try await Self.post(port: port, group: group, path: "/sse?session=\(session)", body: #"{"id":6,"ping":{}}"#)
            #expect(okStatus == 202)
            #expect(try await stream.next()?.data == #"{"id":6,"result":{}}"#)
        }
    }

    @Test("a stream whose id would not fit in a Last-Event-ID header gets empty ids (EventSource then sends none), and its events all the same")
    func oversizeResumeID() async throws {
        try await LoopbackNode.run { node, port, group in
            // 30 channels of 250-byte names: about 8 KB of positions, 10 KB as an id.
            let names = (0..<30).map { "long:\($0)-" + String(repeating: "x", count: 240) }
            let body = "{\"subs\":{" + names.map { "\"\($0)\":{}" }.joined(separator: ",") + "}}"
            let client = try await LoopbackClient.connect(port: port, group: group)
            try await client.send(
                "POST /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\n"
                    + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)")
            var stream = EventStreamReader(client: client)
            let connected = try #require(try await stream.next())
            #expect(connected.data.hasPrefix(#"{"id":1,"result":{"client":"#))
            #expect(connected.id == "")
            _ = try await Self.post(port: port, group: group, path: "/rpc", body: #"{"id":1,"publish":{"channel":"\#(names[7])","data":1}}"#)
            let pub = try #require(try await stream.next())
            #expect(pub.data.hasPrefix(#"{"channel":"\#(names[7])","pub":{"offset":1"#))
            #expect(pub.id == "")
        }
    }

    @Test("a new stream with Last-Event-ID gets what was published in between, once, in order")
    func resume() async throws {
        try await LoopbackNode.run { node, port, group in
            let connect = HTTPQueryEncoding.encode(#"{"subs":{"feed":{}}}"#)
            var first = try await Self.open(port: port, group: group, query: "?connect=\(connect)")
            let connected = try #require(try await first.next())
            #expect(connected.data.contains(#""feed":{"offset":0"#))
            _ = try await Self.post(port: port, group: group, path: "/rpc", body: #"{"id":1,"publish":{"channel":"feed","data":1}}"#)
            let pub = try #require(try await first.next())
            #expect(pub.data.contains(#""offset":1"#))
            try await first.client.channel.close()
            for i in 2...4 {
                _ = try await Self.post(port: port, group: group, path: "/rpc", body: #"{"id":1,"publish":{"channel":"feed","data":\#(i)}}"#)
            }
            var second = try await Self.open(port: port, group: group, query: "?connect=\(connect)", lastEventID: pub.id)
            let reconnected = try #require(try await second.next())
            #expect(reconnected.data.contains(#""recovered":true"#))
            // The missed publications ride in the subscribe result, oldest first, and nothing else repeats them.
            let offsets = reconnected.data.components(separatedBy: #""offset":"#).dropFirst().compactMap { Int($0.prefix { $0.isNumber }) }
            #expect(offsets == [4, 2, 3, 4])
        }
    }

    @Test("a poll behind by more than one answer pages through what it missed: as much as fits each time, and the next poll goes on from the last one sent, until every one came once, in order")
    func pollPagesThroughARecoveryLargerThanOneAnswer() async throws {
        try await LoopbackNode.run(configure: { $0.outboundLimit = 4096 }) { node, port, group in
            let data = String(repeating: "x", count: 500)
            for id in 1...10 {
                _ = try await Self.post(port: port, group: group, path: "/rpc", body: #"{"id":\#(id),"publish":{"channel":"p","data":"\#(data)"}}"#)
            }
            let (_, first) = try await Self.post(port: port, group: group, path: "/poll", body: #"{"subs":{"p":{}}}"#)
            let epoch = String(first.split(separator: "\"")[11])
            let (status, page) = try await Self.post(port: port, group: group, path: "/poll", body: #"{"subs":{"p":{"offset":0,"epoch":"\#(epoch)"}}}"#)
            #expect(status == 200)
            // Not "recovered: false" at the top: the first publications, and where to go on from.
            #expect(page.contains(#""pub":{"offset":1,"#))
            #expect(!page.contains(#""recovered":false"#))
            #expect(!page.contains(#""pub":{"offset":10,"#))
            // Polling on from the last publication each answer held (or the position it gives)
            // brings every one of them, once, in order, in more than one answer.
            var offsets: [Int] = []
            var answer = page
            var answers = 1
            while answers <= 20 {
                for item in try JSONParser().parse(Array(answer.utf8)).arrayValue ?? [] {
                    if let offset = item["pub"]?["offset"]?.intValue { offsets.append(offset) }
                    if let offset = item["position"]?["offset"]?.intValue, offset > (offsets.last ?? 0) {
                        Issue.record("a position past the last publication: \(offset)")
                    }
                }
                guard let last = offsets.last, last < 10 else { break }
                let (status, next) = try await Self.post(
                    port: port, group: group, path: "/poll", body: #"{"subs":{"p":{"offset":\#(last),"epoch":"\#(epoch)"}}}"#)
                #expect(status == 200)
                answer = next
                answers += 1
            }
            #expect(offsets == Array(1...10))
            #expect(answers > 1)
        }
    }

    @Test("a waiting poll is answered by the next publication; a poll without a position gets one; a quiet poll times out empty")
    func poll() async throws {
        try await LoopbackNode.run { node, port, group in
            let (status, first) = try await Self.post(port: port, group: group, path: "/poll", body: #"{"subs":{"p":{}}}"#)
            #expect(status == 200)
            #expect(first.hasPrefix(#"[{"channel":"p","position":{"offset":0,"epoch":""#))
            let epoch = String(first.split(separator: "\"")[11])
            async let waiting = Self.post(port: port, group: group, path: "/poll", body: #"{"subs":{"p":{"offset":0,"epoch":"\#(epoch)"}},"timeout":20}"#)
            // Not a synchronisation: a poll from offset 0 returns the publication whether it was
            // already waiting or not; the pause only makes "waiting" the likely case.
            try await Task.sleep(nanoseconds: 200_000_000)
            _ = try await Self.post(port: port, group: group, path: "/rpc", body: #"{"id":1,"publish":{"channel":"p","data":"x"}}"#)
            let (waitStatus, answer) = try await waiting
            #expect(waitStatus == 200)
            #expect(answer.hasPrefix(#"[{"channel":"p","pub":{"offset":1,"data":"x""#))
            let started = NIODeadline.now()
            let (_, quiet) = try await Self.post(port: port, group: group, path: "/poll", body: #"{"subs":{"p":{"offset":1,"epoch":"\#(epoch)"}},"timeout":0.3}"#)
            #expect(quiet == "[]")
            #expect(NIODeadline.now() - started >= .milliseconds(250))
            let (tooMany, _) = try await Self.post(port: port, group: group, path: "/poll", body: #"{"subs":"x"}"#)
            #expect(tooMany == 400)
            for path in ["/poll", "/rpc", "/sse?session=x-0-1.0123456789abcdef0123456789abcdef"] {
                // A body that is not UTF-8 is refused, not read with replacement characters.
                var http = try await LoopbackClient.connect(port: port, group: group)
                let body: [UInt8] = Array(#"{"subs":{"p\#u{00}":{}}}"#.utf8.prefix(10)) + [0xCD, 0x22, 0x7D]
                try await http.send(Array("POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8) + body)
                let (status, answer) = try await http.readHTTPResponse()
                #expect(status == 400, "\(path)")
                #expect(answer.contains("UTF-8"), "\(path): \(answer)")
            }
        }
    }
}

/// Percent-encoding for test URLs.
enum HTTPQueryEncoding {
    static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) {
                out.append(Character(Unicode.Scalar(byte)))
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded
            }
        }
        return out
    }
}

extension String {
    fileprivate var leftPadded: String { self.count == 1 ? "0" + self : self }
}
