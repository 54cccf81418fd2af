import NIOCore
import NIOHTTP1
import SwitchboardCore

/// `POST /rpc`: stateless commands (publish, history, presence, ...) as newline-separated JSON,
/// answered as one JSON array of replies in command order (docs/transports.md). A short-lived
/// session runs them; it is served while the node drains, as it outlives nothing.
struct RPCEndpoint {
    /// An `/rpc` call that has not got all its replies by then is answered with what it has.
    static let timeout: TimeAmount = .seconds(30)

    let node: NodeContext

    /// Serves one call on `handler`'s connection.
    func serve(on handler: HTTPHandler, context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        if let refusal = handler.requestGuard.refusal(.servesRequest, body: body) {
            return handler.respond(context: context, head: head, refusal.response, close: refusal.closesConnection)
        }
        let token = head.bearerToken
        if let failure = handler.tokenRefusal(token) {
            return handler.respond(context: context, head: head, failure)
        }
        let messages: [ClientMessage]
        switch ClientSession.parseCommands(body, allowConnect: true, maximumCommands: self.node.configuration.maxCommandsPerRequest) {
        case .failure(let error):
            return handler.respond(context: context, head: head, .error(error.tooMany ? .payloadTooLarge : .badRequest, error.message))
        case .success(let parsed):
            messages = parsed
        }
        handler.collect(context: context, head: head, purpose: .rpc, timeout: Self.timeout, pollKey: nil) { session in
            session.start(ConnectParams(token: token))
            session.run(messages)
        }
    }
}
