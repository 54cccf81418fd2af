import Logging
import NIOCore
import NIOPosix
@testable import SwitchboardServer
import Testing

/// The whole node over real loopback sockets, in process.
@Suite("Node over loopback", .timeLimit(.minutes(3)))
struct NodeLoopbackTests {
    static func startNode(_ configure: (inout ServerConfiguration) -> Void = { _ in }) async throws -> (SwitchboardNode, Int) {
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.apiKey = "test-key"
        configure(&configuration)
        let node = try SwitchboardNode(configuration: configuration, logger: Logger(label: "test"))
        let port = try await node.start()
        return (node, port)
    }

    func apiPublish(port: Int, group: any EventLoopGroup, channel: String, data: String) async throws -> (Int, String) {
        var http = try await LoopbackClient.connect(port: port, group: group)
        let body = #"{"channel":"\#(channel)","data":\#(data)}"#
        try await http.send(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey test-key\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
        return try await http.readHTTPResponse()
    }

    @Test("handshake, connect, subscribe, and a publication from the HTTP API arrives")
    func publishThroughAPI() async throws {
        try await LoopbackNode.run { node, port, group in
            var ws = try await LoopbackClient.connect(port: port, group: group)
            #expect(try await ws.upgrade() == 101)
            try await ws.send(TestFrames.text(#"{"id":1,"connect":{}}"#))
            #expect(try await ws.readMessage()?.contains(#""client":"#) == true)
            try await ws.send(TestFrames.text(#"{"id":2,"subscribe":{"channel":"news"}}"#))
            #expect(try await ws.readMessage { $0.contains(#""id":2"#) }?.contains(#""offset":0"#) == true)
            let (status, body) = try await apiPublish(port: port, group: group, channel: "news", data: #"{"headline":"hi"}"#)
            #expect(status == 200)
            #expect(body.contains(#""offset":1"#))
            let pub = try await ws.readMessage { $0.contains("pub") }
            #expect(pub?.contains(#""data":{"headline":"hi"}"#) == true)
        }
    }

    @Test("/metrics counts connections, publications and deliveries")
    func metrics() async throws {
        try await LoopbackNode.run { node, port, group in
            var ws = try await LoopbackClient.connected(port: port, group: group)
            try await ws.send(TestFrames.text(#"{"id":2,"subscribe":{"channel":"m"}}"#))
            _ = try await ws.readMessage { $0.contains(#""id":2"#) }
            for i in 0..<3 {
                _ = try await apiPublish(port: port, group: group, channel: "m", data: "\(i)")
                _ = try await ws.readMessage { $0.contains("pub") }
            }
            // Loops hand their counts over, and the hub its gauges, once a second each (on timers of
            // their own): scrape until all are in (bounded), then check.
            var status = 0
            var body = ""
            var lines = Set<String>()
            let oneConnection = [#"switchboard_connections{transport="websocket"} 1"#, #"switchboard_connections{transport="websocket"} 1.0"#]
            let deadline = ContinuousClock.now + .seconds(10)
            repeat {
                if !lines.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
                var http = try await LoopbackClient.connect(port: port, group: group)
                try await http.send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                (status, body) = try await http.readHTTPResponse()
                lines = Set(body.split(separator: "\n").map(String.init))
            } while !(lines.contains("switchboard_publications_total 3") && lines.contains("switchboard_deliveries_total 3")
                && !lines.isDisjoint(with: oneConnection)) && ContinuousClock.now < deadline
            #expect(status == 200)
            #expect(!lines.isDisjoint(with: oneConnection), "\(lines.filter { $0.hasPrefix("switchboard_connections") })")
            #expect(lines.contains("switchboard_publications_total 3"))
            #expect(lines.contains("switchboard_deliveries_total 3"))
            #expect(body.contains("switchboard_publish_to_deliver_seconds_count"))
        }
    }

    @Test("a wrong API key gets 401 from the head (the connection closed: its body is not read) and a non-JSON body 400")
    func apiErrors() async throws {
        try await LoopbackNode.run { node, port, group in
            var refused = try await LoopbackClient.connect(port: port, group: group)
            try await refused.send("POST /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: apikey wrong\r\nContent-Length: 2\r\n\r\n{}")
            #expect(try await refused.readHTTPResponse().status == 401)
            var http = try await LoopbackClient.connect(port: port, group: group)
            try await http.send("POST /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: apikey test-key\r\nContent-Length: 3\r\n\r\n{x}")
            #expect(try await http.readHTTPResponse().status == 400)
            try await http.send("POST /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: apikey test-key\r\nContent-Length: 2\r\n\r\n{}")
            let info = try await http.readHTTPResponse()
            #expect(info.status == 200 && info.body.contains(#""nodes":["#))
        }
    }

    @Test("an API request that is not a POST is answered 405 from its head: a large body is neither awaited nor held")
    func apiOtherMethodsRefusedFromTheHead() async throws {
        try await LoopbackNode.run { node, port, group in
            for (method, key) in [("PUT", ""), ("GET", ""), ("PUT", "Authorization: apikey test-key\r\n")] {
                var http = try await LoopbackClient.connect(port: port, group: group)
                // A body of up to `maxRequestBodySize` announced and never sent: answered without it
                // (before, the node waited for the body until the request deadline, 30 s).
                try await http.send("\(method) /api/publish HTTP/1.1\r\nHost: x\r\n\(key)Content-Length: 1048575\r\n\r\n{")
                #expect(try await http.readHTTPResponse().status == 405, "\(method) \(key)")
            }
            // Without a body announced, a request pipelined behind it is still answered.
            var pipelined = try await LoopbackClient.connect(port: port, group: group)
            try await pipelined.send(
                "GET /api/info HTTP/1.1\r\nHost: x\r\n\r\nPOST /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: apikey test-key\r\nContent-Length: 2\r\n\r\n{}")
            #expect(try await pipelined.readHTTPResponse().status == 405)
            #expect(try await pipelined.readHTTPResponse().status == 200)
        }
    }

    @Test("drain: readiness fails, clients get the disconnect push and close 3001")
    func drain() async throws {
        try await LoopbackNode.run(configure: { $0.drainSeconds = 4 }) { node, port, group in
            var ws = try await LoopbackClient.connected(port: port, group: group)
            let drain = Task { await node.drain() }
            // Readiness turns 503 once the drain has begun: asked until it does (bounded), not after a sleep.
            var ready = 0
            let deadline = ContinuousClock.now + .seconds(3)
            repeat {
                if ready != 0 { try await Task.sleep(for: .milliseconds(20)) }
                var http = try await LoopbackClient.connect(port: port, group: group)
                try await http.send("GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                ready = try await http.readHTTPResponse().status
            } while ready != 503 && ContinuousClock.now < deadline
            #expect(ready == 503)
            try await ws.expectShutdownDisconnect()
            await drain.value
        }
    }

    @Test("stop: a connection upgraded but not connected yet gets the disconnect push and close 3001, as a connected one does; stopping again does nothing")
    func stopClosesSessionsBeforeConnect() async throws {
        try await LoopbackNode.run { node, port, group in
            let connected = try await LoopbackClient.connected(port: port, group: group)
            var waiting = try await LoopbackClient.connect(port: port, group: group)
            #expect(try await waiting.upgrade() == 101)
            // No `connect` from `waiting`: before, the node's stop left it open until the loops shut
            // down (and a `connect` arriving meanwhile joined a hub already stopped).
            await node.stop()
            for var ws in [connected, waiting] { try await ws.expectShutdownDisconnect() }
            await node.stop()  // LoopbackNode.run stops it once more, after the loops are gone
        }
    }
}

extension LoopbackClient {
    /// A WebSocket client past its handshake and `connect` (id 1).
    static func connected(port: Int, group: any EventLoopGroup) async throws -> LoopbackClient {
        var ws = try await LoopbackClient.connect(port: port, group: group)
        #expect(try await ws.upgrade() == 101)
        try await ws.send(TestFrames.text(#"{"id":1,"connect":{}}"#))
        _ = try await ws.readMessage()
        return ws
    }

    /// Reads on to the node's shutdown push and the close that follows it (3001).
    mutating func expectShutdownDisconnect() async throws {
        let push = try await self.readMessage { $0.contains("disconnect") }
        #expect(push == #"{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}"#)
        var close: TestFrames.ServerFrame?
        while let frame = try await self.readFrame() {
            if frame.opcode == 0x8 { close = frame; break }
        }
        #expect(close?.closeCode == 3001)
    }
}
