import NIOCore
import RESP

/// One command sent or queued, and what its reply goes to.
struct RedisPendingReply: Sendable {
    /// Who gets the reply.
    enum Receiver: Sendable {
        case promise(EventLoopPromise<RESPToken>)
        /// Called on the client's event loop.
        case callback(@Sendable (Result<RESPToken, RedisError>) -> Void)

        func complete(_ result: Result<RESPToken, RedisError>) {
            switch self {
            case .promise(let promise):
                switch result {
                case .success(let token): promise.succeed(token)
                case .failure(let error): promise.fail(error)
                }
            case .callback(let callback):
                callback(result)
            }
        }
    }

    var receiver: Receiver
    /// Encoded bytes counted against the client's budget of pending commands; nil for the
    /// connection's handshake commands, which never enter that budget.
    var budgetedBytes: Int?
    /// The command to send instead if the server answers `NOSCRIPT` (a script call by source).
    var noScriptFallback: RedisCommand?
}
