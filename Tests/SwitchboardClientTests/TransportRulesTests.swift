import NIOCore
import SwitchboardCore
import Testing

@testable import SwitchboardClient

/// The fallback rules and the SSE reading, as plain values: no socket.
@Suite("Swift client transports, as values")
struct TransportRulesTests {
    // MARK: the ladder

    @Test("a transport that cannot open and never worked is left after one attempt; the last one wraps to the first")
    func fallsBackWhenNeverOpened() {
        var ladder = TransportLadder([.webSocket, .sse])
        #expect(ladder.current == .webSocket)
        do { let result = ladder.ended(opened: false, wasConnected: false); #expect(result == .next) }
        #expect(ladder.current == .sse)
        do { let result = ladder.ended(opened: false, wasConnected: false); #expect(result == .wrapped) }
        #expect(ladder.current == .webSocket)
    }

    @Test("a transport that opened, or that worked before, is left only after two failures in a row")
    func staysOnWhatWorked() {
        var ladder = TransportLadder([.webSocket, .sse])
        // Opened (the 101 came) but no connect reply: once is not enough.
        do { let result = ladder.ended(opened: true, wasConnected: false); #expect(result == .stay) }
        do { let result = ladder.ended(opened: true, wasConnected: false); #expect(result == .next) }
        #expect(ladder.current == .sse)
        ladder.connected()
        // A connection that had its reply never moves the ladder, however it ends.
        do { let result = ladder.ended(opened: true, wasConnected: true); #expect(result == .stay) }
        // SSE worked: a refused stream (a draining node's 503) is retried once before moving on.
        do { let result = ladder.ended(opened: false, wasConnected: false); #expect(result == .stay) }
        #expect(ladder.current == .sse)
        do { let result = ladder.ended(opened: false, wasConnected: false); #expect(result == .wrapped) }
        #expect(ladder.current == .webSocket)
    }

    @Test("one transport never moves; repeats and an empty list are cleaned up")
    func singleTransport() {
        var only = TransportLadder([.sse, .sse])
        #expect(only.transports == [.sse])
        for _ in 0..<5 {
            let move = only.ended(opened: false, wasConnected: false)
            #expect(move == .stay)
        }
        #expect(TransportLadder([]).transports == [.webSocket])
        #expect(!only.canClimbBack)
    }

    @Test("climbing back: only from a fallback, only when WebSocket comes first")
    func climbBack() {
        var ladder = TransportLadder([.webSocket, .sse])
        #expect(!ladder.canClimbBack)
        _ = ladder.ended(opened: false, wasConnected: false)
        #expect(ladder.canClimbBack)
        ladder.climbBack()
        #expect(ladder.current == .webSocket && !ladder.canClimbBack)
        var sseFirst = TransportLadder([.sse, .webSocket])
        _ = sseFirst.ended(opened: false, wasConnected: false)
        #expect(sseFirst.current == .webSocket && !sseFirst.canClimbBack)
    }

    @Test("the state machine moves to the next transport at once, waits the backoff when it wraps, and stops on a terminal code whatever the ladder")
    func machineFallback() {
        var machine = ConnectionStateMachine(
            backoff: ReconnectBackoff(minimumNanoseconds: 1_000, maximumNanoseconds: 8_000), renewsTokens: false,
            transports: [.webSocket, .sse])
        do { let result = machine.start(); #expect(result == .openConnection) }
        #expect(machine.transport == .webSocket)
        // The upgrade refused: SSE next, with no wait.
        do { let result = machine.lost(code: nil, reason: "upgrade refused: HTTP 404", serverReconnect: nil, random: 0.9); #expect(result == .scheduleReconnect(nanoseconds: 0)) }
        #expect(machine.transport == .sse)
        do { let result = machine.timerFired(); #expect(result == .openConnection) }
        machine.opened()
        do { let result = machine.connected(); #expect(result) }
        #expect(machine.probesForClimbBack)
        // Connected over SSE and lost: SSE again, after the backoff.
        do { let result = machine.lost(code: 3001, reason: "drain", serverReconnect: true, random: 0.5); #expect(result == .scheduleReconnect(nanoseconds: 2_000)) }
        #expect(machine.transport == .sse)
        do { let result = machine.timerFired(); #expect(result == .openConnection) }
        #expect(!machine.probesForClimbBack, "not while connecting")
        do { let result = machine.connected(); #expect(result) }
        machine.stable()  // a probe comes after upgradeInterval: the connection has lived a while
        do { let result = machine.climbBack(); #expect(result) }
        #expect(machine.transport == .webSocket)
        do { let again = machine.climbBack(); #expect(!again, "once") }
        do { let result = machine.lost(code: nil, reason: "left the fallback", serverReconnect: nil, random: 0.5); #expect(result == .scheduleReconnect(nanoseconds: 500)) }
        do { let result = machine.timerFired(); #expect(result == .openConnection) }
        do { let result = machine.lost(code: 3500, reason: "bad token", serverReconnect: false, random: 0.5); #expect(result == .stop(code: 3500, reason: "bad token")) }
    }

    // MARK: reading an event stream

    static let stream = "data: {\"id\":1}\nid: abc\n\n: a comment\r\ndata: {\"a\":1}\r\ndata: {\"b\":2}\r\n\r\nevent: x\rdata:{}\r\rretry: 5\n\n"

    @Test("events come out whole whatever the pieces: LF, CRLF and CR line ends, comments, several data lines", arguments: [1, 2, 3, 7, 1000])
    func eventStream(pieceSize: Int) throws {
        var parser = EventStreamParser(maximumEventSize: 1 << 16)
        let bytes = Array(Self.stream.utf8)
        var events: [EventStreamParser.Event] = []
        var start = 0
        while start < bytes.count {
            let end = min(start + pieceSize, bytes.count)
            events += try parser.push(ByteBuffer(bytes: bytes[start..<end]))
            start = end
        }
        #expect(events.map { String(buffer: $0.data) } == [#"{"id":1}"#, "{\"a\":1}\n{\"b\":2}", "{}"])
        #expect(events.map(\.lastEventID) == ["abc", "abc", "abc"])
    }

    @Test("an event over the limit is an error, however it trickles in; one at the limit passes")
    func eventStreamLimit() throws {
        var atLimit = EventStreamParser(maximumEventSize: 16)
        let fits = try atLimit.push(ByteBuffer(string: "data: 0123456789\n\n"))  // 16 bytes of line
        #expect(fits.map { String(buffer: $0.data) } == ["0123456789"])
        var parser = EventStreamParser(maximumEventSize: 16)
        #expect(throws: EventStreamParser.EventTooLarge(limit: 16)) {
            for _ in 0..<100 { _ = try parser.push(ByteBuffer(string: "data: 1\n")) }
        }
        var noNewline = EventStreamParser(maximumEventSize: 16)
        #expect(throws: EventStreamParser.EventTooLarge(limit: 16)) {
            _ = try noNewline.push(ByteBuffer(repeating: UInt8(ascii: "x"), count: 17))
        }
    }

    // MARK: where SSE goes, what it sends

    @Test("the SSE path sits beside the WebSocket path", arguments: [
        ("ws://h/ws", "/sse"), ("ws://h/app/ws?x=1", "/app/sse"), ("ws://h", "/sse"), ("ws://h/socket", "/socket/sse"),
        ("http://h:8000", "/sse"), ("https://h/base/", "/base/sse"), ("ws://h/news", "/news/sse"),
    ])
    func ssePath(url: String, path: String) throws {
        #expect(ClientEndpoint(url)?.ssePath == path)
    }

    @Test("the stream's body is the connect params alone; a session id is percent-encoded in the command URL")
    func connectBody() throws {
        var body = ByteBuffer()
        OutgoingCommand.connect(
            token: "t", name: "n", subs: [("a", StreamPosition(offset: 3, epoch: "e")), ("b", nil)]
        ).writeConnectParams(into: &body)
        let object = try #require(try JSONParser().parse(body.readableBytesView).objectValue)
        #expect(object["token"]?.stringValue == "t" && object["name"]?.stringValue == "n" && object["id"] == nil)
        #expect(object["subs"]?.objectValue?["a"]?.objectValue?["offset"]?.intValue == 3)
        #expect(object["subs"]?.objectValue?["b"]?.objectValue?.isEmpty == true)
        #expect("a.b-c_d~e/f+g h&é".addingPercentEncodingForQuery() == "a.b-c_d~e%2Ff%2Bg%20h%26%C3%A9")
    }

    @Test("command bodies: whole commands, one per line, each body within the node's message size, oldest first")
    func commandBatches() {
        var batches = CommandBatches(maximumBodySize: 20)
        #expect(batches.nextBatch() == nil)
        for text in ["aaaaaaaa", "bbbbbbbb", "cccccccc", String(repeating: "d", count: 30), "e"] {
            batches.append(ByteBuffer(string: text))
        }
        var bodies: [String] = []
        while let body = batches.nextBatch() { bodies.append(String(buffer: body)) }
        #expect(bodies == ["aaaaaaaa\nbbbbbbbb", "cccccccc", String(repeating: "d", count: 30), "e"], "an oversize command goes alone")
        #expect(batches.isEmpty)
    }

    @Test("long-polling's paths sit beside the SSE stream's")
    func longPollingPaths() throws {
        let base = try #require(ClientEndpoint("http://h:8000/app"))
        #expect(base.ssePath == "/app/sse" && base.pollPath == "/app/poll" && base.rpcPath == "/app/rpc")
        let custom = ClientEndpoint(host: "h", port: 1, path: "/ws", ssePath: "/events")
        #expect(custom.pollPath == "/events/poll" && custom.rpcPath == "/events/rpc")
    }

    @Test("the default ladder: WebSocket, then SSE, then long-polling, each at once when the one before cannot open")
    func defaultLadder() throws {
        var ladder = TransportLadder(try SwitchboardClientConfiguration(url: "ws://h/ws").transports)
        #expect(ladder.transports == [.webSocket, .sse, .longPolling])
        var moves: [TransportLadder.Move] = []
        for _ in 0..<3 { moves.append(ladder.ended(opened: false, wasConnected: false)) }
        #expect(moves == [.next, .next, .wrapped])
    }

    @Test("long-polling: which answers end the connection, and with what code", arguments: [
        (200, "", nil, false), (401, #"{"error":{"code":101,"message":"bad token"}}"#, 3500, true),
        (401, #"{"error":{"code":109,"message":"token expired"}}"#, 3503, true), (503, "", 3001, true),
        (404, "", nil, true), (500, "x", nil, true),
    ] as [(UInt, String, UInt16?, Bool)])
    func longPollEndings(status: UInt, body: String, code: UInt16?, ends: Bool) {
        let ending = LongPollClientConnection.ending(HTTPExchange.Answer(status: status, body: ByteBuffer(string: body)), request: "poll")
        #expect((ending != nil) == ends)
        #expect(ending?.0 == code)
    }
}
