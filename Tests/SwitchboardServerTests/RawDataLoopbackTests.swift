import Foundation
import NIOCore
import NIOPosix
import SwitchboardCore
@testable import SwitchboardServer
import Testing

/// `publish.data` arrives at subscribers, in history and in recovery exactly as the publisher
/// sent it: the server validates it and carries its bytes, it never re-encodes it.
@Suite("publish.data bytes over loopback", .timeLimit(.minutes(3)))
struct RawDataLoopbackTests {
    /// Data whose re-encoding would show: whitespace, escapes that decode to other bytes, numbers
    /// no Double holds, member order and a duplicate member.
    static let samples = [
        #"{ "b" : 1 ,  "a" :[ 2 ,3 ],\#t"b":4 }"#,
        #""caf\u00e9 \ud83d\ude00 \/ \"q\"""#,
        "1e400",
        "12345678901234567890",
        "-0.000E-0",
        #""é😀""#,
        #"[ ]"#,
    ]

    /// The text objects of the subscriber's next frame that carries a publication.
    static func nextPublication(_ ws: inout LoopbackClient) async throws -> String {
        let text = try #require(try await ws.readMessage { $0.contains(#""pub":"#) })
        let objects = text.split(separator: "\n").filter { $0.contains(#""pub":"#) }
        #expect(objects.count == 1, "one publication per wait: \(text)")
        return String(objects[0])
    }

    /// Every `"data":` value in `text`, in order, found by matching each expected one in turn.
    static func expectInOrder(_ expected: [String], in text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        var rest = Substring(text)
        for data in expected {
            guard let range = rest.range(of: #""data":\#(data)"#) else {
                Issue.record("\"data\":\(data) missing (or out of order) in \(text)", sourceLocation: sourceLocation)
                return
            }
            rest = rest[range.upperBound...]
        }
    }

    @Test("WebSocket and API publications, history and recovery carry the data bytes unchanged")
    func webSocketAndAPI() async throws {
        try await LoopbackNode.run { _, port, group in
            var subscriber = try await LoopbackClient.connect(port: port, group: group)
            #expect(try await subscriber.upgrade() == 101)
            try await subscriber.send(TestFrames.text(#"{"id":1,"connect":{}}"#))
            _ = try await subscriber.readMessage()
            try await subscriber.send(TestFrames.text(#"{"id":2,"subscribe":{"channel":"raw"}}"#))
            let subscribed = try #require(try await subscriber.readMessage { $0.contains(#""id":2"#) })
            let epoch = try #require(subscribed.firstMatch(of: /"epoch":"([^"]+)"/)?.1)

            var publisher = try await LoopbackClient.connect(port: port, group: group)
            #expect(try await publisher.upgrade() == 101)
            try await publisher.send(TestFrames.text(#"{"id":1,"connect":{}}"#))
            let connected = try #require(try await publisher.readMessage())
            let client = try #require(connected.firstMatch(of: /"client":"([^"]+)"/)?.1)

            var offset = 0
            for (i, data) in Self.samples.enumerated() {
                offset += 1
                try await publisher.send(TestFrames.text(#"{"id":\#(i + 10),"publish":{"data":\#(data),"channel":"raw"}}"#))
                #expect(try await Self.nextPublication(&subscriber)
                    == #"{"channel":"raw","pub":{"offset":\#(offset),"data":\#(data),"info":{"client":"\#(client)","user":""}}}"#)
            }
            for data in Self.samples {
                offset += 1
                let (status, _) = try await NodeLoopbackTests().apiPublish(port: port, group: group, channel: "raw", data: data)
                #expect(status == 200)
                #expect(try await Self.nextPublication(&subscriber) == #"{"channel":"raw","pub":{"offset":\#(offset),"data":\#(data)}}"#)
            }
            // Line breaks between tokens would split the object on the wire: they travel as spaces.
            offset += 1
            try await publisher.send(TestFrames.text("{\"id\":30,\"publish\":{\"channel\":\"raw\",\"data\":{\n\"a\":\r\n[1,\n2]}}}"))
            let spaced = #"{ "a":  [1, 2]}"#
            #expect(try await Self.nextPublication(&subscriber)
                == #"{"channel":"raw","pub":{"offset":\#(offset),"data":\#(spaced),"info":{"client":"\#(client)","user":""}}}"#)
            let everything = Self.samples + Self.samples + [spaced]

            // History, from a WebSocket command and from the API, gives back the same bytes.
            try await publisher.send(TestFrames.text(#"{"id":40,"history":{"channel":"raw","limit":100}}"#))
            let history = try #require(try await publisher.readMessage { $0.contains(#""id":40"#) })
            Self.expectInOrder(everything, in: history)
            var http = try await LoopbackClient.connect(port: port, group: group)
            let body = #"{"channel":"raw","limit":100}"#
            try await http.send(
                "POST /api/history HTTP/1.1\r\nHost: x\r\nAuthorization: apikey test-key\r\n"
                    + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
            let (historyStatus, apiHistory) = try await http.readHTTPResponse()
            #expect(historyStatus == 200)
            Self.expectInOrder(everything, in: apiHistory)

            // Recovery: a subscriber coming back from offset 1 gets the rest in its subscribe result.
            var returning = try await LoopbackClient.connect(port: port, group: group)
            #expect(try await returning.upgrade() == 101)
            try await returning.send(TestFrames.text(#"{"id":1,"connect":{}}"#))
            _ = try await returning.readMessage()
            try await returning.send(TestFrames.text(#"{"id":2,"subscribe":{"channel":"raw","since":{"offset":1,"epoch":"\#(epoch)"}}}"#))
            let recovered = try #require(try await returning.readMessage { $0.contains(#""id":2"#) })
            #expect(recovered.contains(#""recovered":true"#))
            Self.expectInOrder(Array(everything.dropFirst()), in: recovered)
            #expect(!recovered.contains(#"{"offset":1,"#))
        }
    }

    @Test("invalid data is refused as before: the WebSocket closes with 3501, the API answers 400")
    func invalidData() async throws {
        try await LoopbackNode.run { _, port, group in
            for data in ["[1,]", #""\x""#, #""\ud800""#, "01", "{\"a\" 1}", "tru", "1.", #"{"a":}"#] {
                var ws = try await LoopbackClient.connect(port: port, group: group)
                #expect(try await ws.upgrade() == 101)
                try await ws.send(TestFrames.text(#"{"id":1,"connect":{}}"#))
                _ = try await ws.readMessage()
                try await ws.send(TestFrames.text(#"{"id":2,"publish":{"channel":"raw","data":\#(data)}}"#))
                var close: TestFrames.ServerFrame?
                while let frame = try await ws.readFrame() {
                    if frame.opcode == 0x8 {
                        close = frame
                        break
                    }
                }
                #expect(close?.closeCode == 3501, "\(data)")

                let (status, body) = try await NodeLoopbackTests().apiPublish(port: port, group: group, channel: "raw", data: data)
                #expect(status == 400, "\(data)")
                #expect(body == #"{"error":{"code":107,"message":"body is not a JSON object","temporary":false}}"#)

                let (rpcStatus, rpcBody) = try await TransportLoopbackTests.post(
                    port: port, group: group, path: "/rpc", body: #"{"id":1,"publish":{"channel":"raw","data":\#(data)}}"#)
                #expect(rpcStatus == 400, "\(data)")
                #expect(rpcBody.contains("malformed JSON"), "\(data): \(rpcBody)")
            }
            // Nothing got through.
            let (_, history) = try await TransportLoopbackTests.post(port: port, group: group, path: "/rpc", body: #"{"id":1,"history":{"channel":"raw"}}"#)
            #expect(history.contains(#""publications":[]"#), "\(history)")
        }
    }

    @Test("SSE events, /rpc and polls carry the data bytes unchanged")
    func httpTransports() async throws {
        try await LoopbackNode.run { _, port, group in
            let connect = HTTPQueryEncoding.encode(#"{"subs":{"raw":{}}}"#)
            var stream = try await TransportLoopbackTests.open(port: port, group: group, query: "?connect=\(connect)")
            let connected = try #require(try await stream.next())
            let epoch = try #require(connected.data.firstMatch(of: /"epoch":"([^"]+)"/)?.1)
            let session = try #require(TransportLoopbackTests.session(of: connected))

            for (i, data) in Self.samples.enumerated() {
                let (status, answer) = try await TransportLoopbackTests.post(
                    port: port, group: group, path: "/rpc", body: #"{"id":1,"publish":{"channel":"raw","data":\#(data)}}"#)
                #expect(status == 200, "\(answer)")
                let event = try #require(try await stream.next())
                #expect(event.data.hasPrefix(#"{"channel":"raw","pub":{"offset":\#(i + 1),"data":\#(data),"info":{"client":""#), "\(event.data)")
            }
            // A line break inside data would end the SSE data line: it travels as a space.
            let (status, _) = try await TransportLoopbackTests.post(
                port: port, group: group, path: "/sse?session=\(session)", body: "{\"id\":2,\"publish\":{\"channel\":\"raw\",\"data\":[\n1\r\n]}}")
            #expect(status == 202)
            var seen: [String] = []
            while seen.count < 2, let event = try await stream.next() { seen.append(event.data) }
            #expect(seen.contains { $0.hasPrefix(#"{"channel":"raw","pub":{"offset":\#(Self.samples.count + 1),"data":[ 1  ],"info":"#) }, "\(seen)")

            let (pollStatus, polled) = try await TransportLoopbackTests.post(
                port: port, group: group, path: "/poll", body: #"{"subs":{"raw":{"offset":0,"epoch":"\#(epoch)"}},"timeout":0}"#)
            #expect(pollStatus == 200)
            Self.expectInOrder(Self.samples + ["[ 1  ]"], in: polled)
        }
    }
}
