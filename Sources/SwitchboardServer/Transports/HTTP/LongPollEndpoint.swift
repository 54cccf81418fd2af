import NIOCore
import NIOHTTP1
import SwitchboardCore

/// `POST /poll`: what the given channels have after the given positions, now or as soon as it
/// comes, as one JSON array (docs/transports.md). Each poll is a short-lived session whose objects
/// become the answer; waiting polls are counted per client address and per `client` field, so one
/// address cannot hold the node's sockets and sessions open with polls.
struct LongPollEndpoint {
    /// Longest a poll may wait, and how long it waits when it does not say.
    static let maximumTimeout: Double = 60
    static let defaultTimeout: Double = 25
    /// Most `client` bytes (the key of the per-client cap).
    static let maximumClientSize = 64
    /// How long past a poll's wait its poller stays in presence: the time to make the next poll.
    static let presenceGrace: Double = 10

    private static let parser = JSONParser(maximumDepth: 16, maximumValues: 20_000)

    /// What a poll asks for, read from its JSON body.
    struct Request: Hashable {
        /// The channels and positions (`subs`) and the token (the body's, else the bearer's).
        var params: ConnectParams
        /// Seconds to wait for something to answer with.
        var timeout: Double
        /// The poller's own id, counted under the per-client cap; empty when not given.
        var client: String
    }

    /// Reads a poll's body: `{"subs": {...}, "timeout": s, "client": id, "token": jwt}`, every
    /// member optional; an entry of `subs` may carry the channel's subscription `token`. Pure, so every refusal is tested without sockets.
    static func request(body: ByteBuffer, bearer: String?, maximumSubscriptions: Int) -> Result<Request, SwitchboardError> {
        do throws(SwitchboardError) {
            guard case .object(let object) = try? Self.parser.parse(body.readableBytesView) else {
                throw SwitchboardError.badRequest("the body must be a JSON object")
            }
            var params = ConnectParams()
            if let subs = object["subs"] {
                guard subs.objectValue.map({ $0.members.count <= maximumSubscriptions }) ?? true else {
                    throw SwitchboardError.badRequest("at most \(maximumSubscriptions) channels per poll")
                }
                params.subs = try ConnectParams.parseSubs(subs)
                params.subTokens = try ConnectParams.parseSubTokens(subs)
            }
            for sub in params.subs { try ChannelName.validate(sub.channel) }
            var timeout = Self.defaultTimeout
            if let value = object["timeout"], value != .null {
                guard let seconds = value.doubleValue, seconds >= 0, seconds <= Self.maximumTimeout else {
                    throw SwitchboardError.badRequest("timeout must be a number of seconds from 0 to \(Int(Self.maximumTimeout))")
                }
                timeout = seconds
            }
            let client = try ClientMessage.optionalString(object, "client") ?? ""
            guard client.utf8.count <= Self.maximumClientSize else {
                throw SwitchboardError.badRequest("client must be at most \(Self.maximumClientSize) bytes")
            }
            params.token = try ClientMessage.optionalString(object, "token") ?? bearer
            return .success(Request(params: params, timeout: timeout, client: client))
        } catch {
            return .failure(error)
        }
    }

    let node: NodeContext

    /// Serves one poll on `handler`'s connection.
    func serve(on handler: HTTPHandler, context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        if let refusal = handler.requestGuard.refusal(.startsSession, body: body) {
            return handler.respond(context: context, head: head, refusal.response, close: refusal.closesConnection)
        }
        let request: Request
        switch Self.request(body: body, bearer: head.bearerToken, maximumSubscriptions: self.node.configuration.maxSubscriptions) {
        case .success(let read): request = read
        case .failure(let error): return handler.respond(context: context, head: head, .error(.badRequest, error.message))
        }
        if let failure = handler.tokenRefusal(request.params.token) {
            return handler.respond(context: context, head: head, failure)
        }
        // A poll that recovers reads history: refused while its address's budget is spent (each
        // recovery is charged what it read), so a client cannot loop on polls that read 128 channels.
        if request.params.subs.contains(where: { $0.since != nil }), let budgetKey = self.node.budgetKey(forAddress: handler.clientAddress),
            !self.node.historyReads.allowsRead(for: budgetKey)
        {
            self.node.metrics.auth.count(.historyRate)
            var refusal = HTTPResponse.error(.tooManyRequests, ClientSession.historyBudgetSpent.message, code: .tooManyRequests)
            refusal.headers.append(("Retry-After", "1"))
            return handler.respond(context: context, head: head, refusal)
        }
        let pollKey = PollKey(client: request.client, address: handler.clientAddress)
        if let refusal = self.node.beginPoll(client: pollKey.client, address: pollKey.address) {
            return handler.respond(context: context, head: head, .error(.tooManyRequests, refusal))
        }
        // A poller that names itself stays in presence between polls: for the poll's wait and a grace.
        let presence = request.client.isEmpty
            ? nil : CollectOutput.PollPresence(client: request.client, ttl: request.timeout + Self.presenceGrace, address: pollKey.address)
        handler.collect(
            context: context, head: head, purpose: .poll, timeout: .milliseconds(Int64(request.timeout * 1000)), pollKey: pollKey,
            presence: presence
        ) { session in
            session.start(request.params)
        }
    }
}

/// What a waiting poll is counted under, against the per-client and per-address caps.
struct PollKey {
    var client: String
    var address: String
}
