import NIOCore
import NIOHTTP1
import NIOSSL
import SwitchboardCore

/// A connection over long-polling: nothing is held open on a node. It opens with an `/rpc` `ping`
/// (it checks the endpoint and the token; its answer stands for the connect reply), then polls
/// `POST /poll` with every channel the driver follows and its position, again and again; commands go
/// as `POST /rpc`, one request at a time so that they are answered in order. Every request carries
/// the token in `Authorization`, never in the URL.
///
/// A poll for a channel seen for the first time asks with `timeout: 0`, which the node answers at
/// once with the channel's position (none for a channel without history). A change in the channels
/// (subscribe, unsubscribe) cancels the poll in flight and starts a new one. Answers the driver
/// cannot act on end the connection: `401` (bad or expired token: 3500 or 3503), `503` (draining:
/// 3001), `400` (3501), ten `429`s in a row, any other status or a failed request.
final class LongPollClientConnection: ClientConnection {
    private enum State {
        case opening(HTTPExchange)
        case open
        case closed
    }

    private enum PollState {
        case idle
        case polling(HTTPExchange)
        /// Waiting before the next poll (after a `429`, or an empty answer that came at once).
        case pausing(Scheduled<Void>)
        /// A new poll is due shortly (subscriptions are changing).
        case restarting(Scheduled<Void>)
    }

    private let driver: ClientDriver
    private let generation: UInt64
    private let endpoint: ClientEndpoint
    private let sslContext: NIOSSLContext?
    private let eventLoop: any EventLoop
    private let headers: [(String, String)]
    private let requestTimeout: TimeAmount
    private let maximumAnswerSize: Int
    private var state: State?
    private var pollState = PollState.idle
    private var commands: CommandBatches
    private var posting: HTTPExchange?
    /// `429` answers in a row.
    private var refusedPolls = 0
    let allocator = ByteBufferAllocator()

    init(
        driver: ClientDriver, generation: UInt64, endpoint: ClientEndpoint, sslContext: NIOSSLContext?, eventLoop: any EventLoop,
        token: String?, requestTimeout: TimeAmount, maximumBodySize: Int, maximumAnswerSize: Int
    ) {
        self.driver = driver
        self.generation = generation
        self.endpoint = endpoint
        self.sslContext = sslContext
        self.eventLoop = eventLoop
        var headers = [("Content-Type", "text/plain; charset=utf-8")]
        if let token { headers.append(("Authorization", "Bearer \(token)")) }
        self.headers = headers
        self.requestTimeout = requestTimeout
        self.maximumAnswerSize = maximumAnswerSize
        self.commands = CommandBatches(maximumBodySize: maximumBodySize)
    }

    /// The handshake: `{"id":1,"ping":{}}` to `/rpc`, within `timeout`.
    func open(timeout: TimeAmount) {
        let exchange = HTTPExchange { result in self.opened(result) }
        self.state = .opening(exchange)
        exchange.start(
            endpoint: self.endpoint, sslContext: self.sslContext, eventLoop: self.eventLoop, method: .POST, target: self.endpoint.rpcPath,
            headers: self.headers, body: ByteBuffer(string: #"{"id":1,"ping":{}}"#), maximumBodySize: 65_536, timeout: timeout)
    }

    private func opened(_ result: Result<HTTPExchange.Answer, HTTPExchange.Failure>) {
        guard case .opening = self.state else { return }
        switch result {
        case .failure(let failure):
            self.end(code: nil, reason: "cannot open: \(failure)")
        case .success(let answer):
            if let (code, reason) = Self.ending(answer, request: "rpc") { return self.end(code: code, reason: "cannot open: " + reason) }
            let reply = try? JSONParser().parse(answer.body.readableBytesView).arrayValue?.first?.objectValue
            guard let reply else { return self.end(code: nil, reason: "cannot open: the rpc answer is not a JSON array") }
            self.state = .open
            self.driver.transportOpened(generation: self.generation)
            var connectReply = ByteBuffer()
            connectReply.writeJSONObject { object in
                object.field("id", int: 1)
                if let error = reply["error"] {
                    object.field("error", json: error)
                } else {
                    object.object("result") { result in
                        result.field("client", string: self.driver.pollClientID)
                        result.field("version", string: reply["result"]?.objectValue?["version"]?.stringValue ?? "")
                        result.field("ping", int: 0)
                        result.field("pong", bool: false)
                    }
                }
            }
            self.driver.received(connectReply, generation: self.generation)
        }
    }

    // MARK: commands

    func send(_ command: ByteBuffer) {
        guard case .open = self.state else { return }
        self.commands.append(command)
    }

    func flush() {
        guard case .open = self.state, self.posting == nil, let body = self.commands.nextBatch() else { return }
        let exchange = HTTPExchange { result in
            self.posting = nil
            guard case .open = self.state else { return }
            switch result {
            case .failure(let failure):
                self.end(code: nil, reason: "rpc failed: \(failure)")
            case .success(let answer):
                if let (code, reason) = Self.ending(answer, request: "rpc") { return self.end(code: code, reason: reason) }
                self.driver.rpcAnswered(answer.body, generation: self.generation)
                self.flush()
            }
        }
        self.posting = exchange
        exchange.start(
            endpoint: self.endpoint, sslContext: self.sslContext, eventLoop: self.eventLoop, method: .POST, target: self.endpoint.rpcPath,
            headers: self.headers, body: body, maximumBodySize: self.maximumAnswerSize, timeout: self.requestTimeout)
    }

    func connectReplied(session: String?) {
        self.restartPoll()
    }

    // MARK: polling

    /// The channels changed: the poll in flight (if any) is dropped and a new one made, once for a
    /// burst of changes.
    func restartPoll() {
        guard case .open = self.state else { return }
        switch self.pollState {
        case .restarting:
            return
        case .polling(let exchange):
            exchange.cancel()
        case .pausing(let timer):
            timer.cancel()
        case .idle:
            break
        }
        self.pollState = .restarting(
            self.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(5)) {
                self.pollState = .idle
                self.poll()
            })
    }

    private func poll() {
        guard case .open = self.state, case .idle = self.pollState else { return }
        guard let request = self.driver.pollRequest(generation: self.generation) else { return }  // nothing to follow
        let started = NIODeadline.now()
        let exchange = HTTPExchange { result in
            guard case .open = self.state, case .polling = self.pollState else { return }
            self.pollState = .idle
            self.polled(result, probe: request.probe, started: started)
        }
        self.pollState = .polling(exchange)
        exchange.start(
            endpoint: self.endpoint, sslContext: self.sslContext, eventLoop: self.eventLoop, method: .POST, target: self.endpoint.pollPath,
            headers: self.headers, body: request.body, maximumBodySize: self.maximumAnswerSize,
            timeout: .seconds(Int64(request.timeoutSeconds) + 10))
    }

    private func polled(_ result: Result<HTTPExchange.Answer, HTTPExchange.Failure>, probe: [String], started: NIODeadline) {
        let answer: HTTPExchange.Answer
        switch result {
        case .failure(let failure):
            return self.end(code: nil, reason: "poll failed: \(failure)")
        case .success(let success):
            answer = success
        }
        if answer.status == 429 {
            // An aborted poll may still count on the node for a moment.
            self.refusedPolls += 1
            guard self.refusedPolls <= 10 else { return self.end(code: nil, reason: "poll refused with 429 ten times") }
            return self.pause(.milliseconds(Int64(200 + Double.random(in: 0..<400) * Double(self.refusedPolls))))
        }
        self.refusedPolls = 0
        if answer.status == 400 {
            return self.end(code: DisconnectCode.badRequest.rawValue, reason: "poll refused: \(Self.errorMessage(answer))")
        }
        if let (code, reason) = Self.ending(answer, request: "poll") { return self.end(code: code, reason: reason) }
        let outcome = self.driver.pollAnswered(answer.body, probe: probe, generation: self.generation)
        guard case .open = self.state else { return }
        guard let outcome else { return self.end(code: nil, reason: "the poll answer is not a JSON array") }
        if !outcome.moved, probe.isEmpty, NIODeadline.now() - started < .milliseconds(200) {
            return self.pause(.milliseconds(500))  // never spin on a node that answers at once with nothing new
        }
        self.poll()
    }

    private func pause(_ delay: TimeAmount) {
        self.pollState = .pausing(
            self.eventLoop.assumeIsolated().scheduleTask(in: delay) {
                self.pollState = .idle
                self.poll()
            })
    }

    // MARK: ending

    /// The code and reason an answer ends the connection with, or nil when it is a `200`.
    static func ending(_ answer: HTTPExchange.Answer, request: String) -> (UInt16?, String)? {
        switch answer.status {
        case 200:
            return nil
        case 401:
            let expired = Self.errorCode(answer) == SwitchboardError.Code.tokenExpired.rawValue
            return (expired ? DisconnectCode.tokenExpired.rawValue : DisconnectCode.invalidToken.rawValue, Self.errorMessage(answer))
        case 503:
            return (DisconnectCode.shutdown.rawValue, "node draining")
        default:
            return (nil, "\(request) answered HTTP \(answer.status)")
        }
    }

    private static func errorObject(_ answer: HTTPExchange.Answer) -> JSONObject? {
        (try? JSONParser().parse(answer.body.readableBytesView))?.objectValue?["error"]?.objectValue
    }

    private static func errorCode(_ answer: HTTPExchange.Answer) -> Int? {
        Self.errorObject(answer)?["code"]?.intValue
    }

    private static func errorMessage(_ answer: HTTPExchange.Answer) -> String {
        Self.errorObject(answer)?["message"]?.stringValue ?? "HTTP \(answer.status)"
    }

    func close() {
        self.end(code: nil, reason: "closed")
    }

    /// Ends the connection once; the driver hears of it on the next turn of the loop (as of a
    /// socket's close), so that nothing the driver is doing now is cut short.
    private func end(code: UInt16?, reason: String) {
        switch self.state {
        case .closed:
            return
        case .opening(let exchange):
            exchange.cancel()
        case .open, .none:
            break
        }
        self.state = .closed
        self.posting?.cancel()
        self.posting = nil
        switch self.pollState {
        case .polling(let exchange): exchange.cancel()
        case .pausing(let timer), .restarting(let timer): timer.cancel()
        case .idle: break
        }
        self.pollState = .idle
        self.commands.removeAll()
        let driver = self.driver
        let generation = self.generation
        self.eventLoop.assumeIsolated().execute {
            driver.connectionClosed(code: code, reason: reason, generation: generation)
        }
    }
}

@available(*, unavailable)
extension LongPollClientConnection: Sendable {}
