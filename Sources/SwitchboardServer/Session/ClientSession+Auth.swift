import Foundation
import NIOCore
import SwitchboardAuth
import SwitchboardCore
import Logging

/// Who a client is and what it may do: connection tokens, subscription tokens, the permission
/// decision and the command rate, for every transport.
extension ClientSession {
    /// `connect`: verifies the token (if any) and connects, or refuses.
    ///
    /// - invalid token: close 3500;
    /// - expired token: error 109, then close 3503;
    /// - no token where one is required (permissions enforced and no namespace grants anything to
    ///   anonymous clients): error 101, then close 3500.
    ///
    /// A token naming a `kid` no key has, with a JWKS URL configured, waits for one fetch
    /// (at most one per 30 s); every other token is verified here, synchronously.
    func authenticateConnect(id: UInt32, _ params: ConnectParams) {
        guard let token = params.token, !token.isEmpty else {
            if self.node.requiresConnectionToken {
                self.node.metrics.auth.count(.tokenMissing)
                self.reply(id: id, error: SwitchboardError(.unauthorized, "a token is required"))
                return self.disconnect(.invalidToken, push: false)
            }
            return self.connect(id: id, params, claims: nil)
        }
        guard self.node.enforcesPermissions else {
            // Dev mode has no key to check a token with: a token is an error, not a free pass.
            self.node.logger.info("token refused: no token key is configured")
            self.node.metrics.auth.count(.tokenInvalid)
            return self.disconnect(.invalidToken, push: false)
        }
        let loop = self.fanout.eventLoop
        // Usually verified at once (the callback runs inline, inside the read that brought the
        // command, which flushes); after a JWKS fetch it runs later and flushes itself.
        var waited = false
        defer { waited = true }
        self.node.tokens.verifyConnectionToken(token, on: loop).hop(to: loop).assumeIsolated().whenComplete { result in
            defer { if waited { self.flush() } }
            guard case .awaitingConnect = self.state else { return }
            switch result {
            case .success(let claims):
                self.connect(id: id, params, claims: claims)
            case .failure(let error):
                let failure = (error as? TokenFailure) ?? .invalid("\(error)")
                self.node.logger.debug("connection token refused", metadata: [
                    "reason": "\(failure)", "token": "\(SecretRedaction.tokenTag(token))",
                ])
                self.node.metrics.auth.count(failure == .expired ? .tokenExpired : .tokenInvalid)
                if failure == .expired {
                    self.reply(id: id, error: SwitchboardError(.tokenExpired))
                    self.disconnect(.tokenExpired, push: false)
                } else {
                    self.disconnect(.invalidToken, push: false)
                }
            }
        }
    }

    /// The subscription token of a `subscribe` or `subRefresh`: its claims when it verified (it
    /// then decides alone), else the error to answer (109 expired, 103 otherwise; the connection stays).
    func checkSubscriptionToken(_ token: String, channel: String) -> Result<SubscriptionTokenClaims, SwitchboardError> {
        guard self.node.enforcesPermissions else { return .failure(SwitchboardError(.permissionDenied, "subscription tokens need a token key")) }
        switch self.node.tokens.verifySubscriptionToken(token, user: self.clientInfo.user, channel: channel) {
        case .success(let claims):
            return .success(claims)
        case .failure(.expired):
            self.node.metrics.auth.count(.subscriptionTokenInvalid)
            return .failure(SwitchboardError(.tokenExpired))
        case .failure(let failure):
            self.node.metrics.auth.count(.subscriptionTokenInvalid)
            self.node.logger.debug("subscription token refused", metadata: [
                "reason": "\(failure)", "channel": "\(channel)", "token": "\(SecretRedaction.tokenTag(token))",
            ])
            return .failure(SwitchboardError(.permissionDenied, "invalid subscription token"))
        }
    }

    /// `refresh`: a new connection token for the same user moves the connection's expiry.
    ///
    /// - the result is `{expires, ttl}` (`{"expires":false}` for a token without expiry);
    /// - an expired token: error 109, and the old deadline (expiry + grace) still counts;
    /// - an invalid token, or one for another user: close 3500.
    ///
    /// Verified like `connect` (a new `kid` may wait for one JWKS fetch); the reply keeps its place.
    func refresh(id: UInt32, token: String) {
        guard self.node.enforcesPermissions else {
            return self.reply(id: id, error: SwitchboardError(.unauthorized, "tokens are not accepted by this server"))
        }
        let slot = self.reserveReply()
        let loop = self.fanout.eventLoop
        var waited = false
        defer { waited = true }
        self.node.tokens.verifyConnectionToken(token, on: loop).hop(to: loop).assumeIsolated().whenComplete { result in
            defer { if waited { self.flush() } }
            guard self.isConnected else { return }
            switch result {
            case .success(let claims) where claims.user == self.clientInfo.user:
                let expiry = claims.expiresAt.map { Self.deadline(expiresAt: $0, now: Date().timeIntervalSince1970) }
                self.liveness.didRefresh(tokenExpiry: expiry)
                let ttl = self.liveness.tokenTTL(now: .now())
                self.completeReply(slot, self.replyMessage(id: id) { Self.writeExpiry(&$0, ttl: ttl) })
            case .success(let claims):
                self.node.metrics.auth.count(.refreshInvalid)
                self.node.logger.info("refresh with another user's token", metadata: [
                    "user": "\(self.clientInfo.user)", "tokenUser": "\(claims.user)", "token": "\(SecretRedaction.tokenTag(token))",
                ])
                self.disconnect(.invalidToken, push: true)
            case .failure(let error):
                let failure = (error as? TokenFailure) ?? .invalid("\(error)")
                if failure == .expired {
                    self.completeReply(slot, self.errorMessage(id: id, SwitchboardError(.tokenExpired)))
                } else {
                    self.node.metrics.auth.count(.refreshInvalid)
                    self.node.logger.debug("refresh token refused", metadata: [
                        "reason": "\(failure)", "token": "\(SecretRedaction.tokenTag(token))",
                    ])
                    self.disconnect(.invalidToken, push: true)
                }
            }
        }
    }

    /// `subRefresh`: a new subscription token for a channel this connection is subscribed to moves
    /// the subscription's expiry. Errors leave the subscription as it was: 107 when not subscribed,
    /// 109 for an expired token, 103 for an invalid one (another user or channel, a bad signature).
    func subRefresh(id: UInt32, channel: String, token: String) {
        guard self.subscriptions[channel] != nil else {
            return self.reply(id: id, error: .badRequest("not subscribed to \(channel)"))
        }
        switch self.checkSubscriptionToken(token, channel: channel) {
        case .success(let claims):
            let expiry = claims.expiresAt.map { Self.deadline(expiresAt: $0, now: Date().timeIntervalSince1970) }
            self.liveness.setSubscriptionExpiry(channel, expiry)
            let ttl = self.liveness.subscriptionTTL(channel, now: .now())
            self.reply(id: id) { Self.writeExpiry(&$0, ttl: ttl) }
        case .failure(let error):
            self.reply(id: id, error: error)
        }
    }

    /// `{"expires":true,"ttl":N}`, or `{"expires":false}` for a token without expiry.
    static func writeExpiry(_ buffer: inout ByteBuffer, ttl: Int?) {
        buffer.writeJSONObject { result in
            result.field("expires", bool: ttl != nil)
            if let ttl { result.field("ttl", int: ttl) }
        }
    }

    /// The one permission decision (`ChannelPermission.check`) for this client.
    func permission(_ action: ChannelAction, channel: String, options: NamespaceOptions, tokenGranted: Bool = false) -> SwitchboardError? {
        let requester = ChannelRequester(
            user: self.clientInfo.user,
            hasSubscriptionToken: tokenGranted,
            // Read only where permissions are enforced: a lookup per publish otherwise spent for nothing.
            isSubscribed: self.node.enforcesPermissions && self.subscriptions[channel] != nil
        )
        let refusal = ChannelPermission.check(action, channel: channel, options: options, requester: requester, enforcing: self.node.enforcesPermissions)
        if refusal != nil { self.node.metrics.auth.count(.permission) }
        return refusal
    }

    /// Counts a command against the connection's rate (token bucket): true to execute it; false when
    /// it was answered 111 or the connection was closed with 3507 (more than 20 refusals in 5 s).
    func admitCommand(id: UInt32) -> Bool {
        switch self.takeCommandToken() {
        case .allow:
            return true
        case .refuse:
            self.node.metrics.auth.count(.commandRate)
            self.reply(id: id, error: SwitchboardError(.tooManyRequests))
            return false
        case .close:
            self.node.metrics.auth.count(.commandRateClose)
            self.node.logger.info("connection closed for command rate", metadata: ["user": "\(self.clientInfo.user)"])
            self.disconnect(.tooManyRequests, push: true)
            return false
        }
    }

    /// Counts a message that gets no reply (a client's pong) against the command rate: a flood of
    /// them costs a loop as much as one of commands. Past the rate it is ignored; too many in a row
    /// close the connection with 3507, as commands do.
    func admitUnanswered() {
        switch self.takeCommandToken() {
        case .allow:
            return
        case .refuse:
            self.node.metrics.auth.count(.commandRate)
        case .close:
            self.node.metrics.auth.count(.commandRateClose)
            self.node.logger.info("connection closed for command rate", metadata: ["user": "\(self.clientInfo.user)"])
            self.disconnect(.tooManyRequests, push: true)
        }
    }

    private func takeCommandToken() -> CommandRateLimiter.Decision {
        let now = NIODeadline.now().uptimeNanoseconds
        if self.commandLimiter == nil {
            let limits = self.node.configuration.limits
            self.commandLimiter = CommandRateLimiter(rate: limits.commandsPerSecond, burst: limits.commandBurst, now: now)
        }
        return self.commandLimiter!.admit(now: now)
    }
}

extension NodeContext {
    /// Whether `connect` needs a token: permissions are enforced and no namespace (nor the
    /// defaults) grants anything to anonymous clients.
    var requiresConnectionToken: Bool {
        guard self.enforcesPermissions else { return false }
        let table = self.configuration.namespaces
        let grantsAnonymous = { (o: NamespaceOptions) in
            o.allowSubscribeForAnonymous || o.allowPublishForAnonymous || o.allowHistoryForAnonymous || o.allowPresenceForAnonymous
        }
        return !grantsAnonymous(table.defaults) && !table.namespaces.values.contains(where: grantsAnonymous)
    }
}
