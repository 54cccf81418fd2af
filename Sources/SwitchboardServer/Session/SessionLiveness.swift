import NIOCore
import SwitchboardCore

/// When a session must act on time: the deadline for its `connect`, server
/// pings after outbound silence, the pong deadline, and the expiry of its
/// connection token and of each subscription token.
///
/// A token that expires is not the end at once: the client has `refreshGrace`
/// more to send `refresh` (or `subRefresh`) with a new one. Unrefreshed after
/// that, the connection closes with 3503 and a subscription ends with 2501.
///
/// A plain value fed events and the time (the per-loop sweep calls `tick`
/// about once a second); it returns what the session must do, and is tested
/// with made-up clocks.
struct SessionLiveness {
    /// What a tick asks of the session.
    enum Action: Hashable {
        case none
        /// Write a ping now.
        case ping
        /// End the connection with this code (a `disconnect` push first when `push`).
        case close(DisconnectCode, push: Bool)
    }

    private var connectDeadline: NIODeadline
    private var connected = false
    /// When the connection token expires, and when the connection closes unless refreshed.
    private var tokenExpiry: NIODeadline = .distantFuture
    private var tokenDeadline: NIODeadline = .distantFuture
    /// Subscriptions admitted by a token that expires: channel -> expiry. Only those with an
    /// expiry are here (at most one entry per subscription), so it is empty for most sessions.
    private var subscriptionExpiries: [String: NIODeadline] = [:]
    /// The earliest entry of `subscriptionExpiries` plus the grace: nothing to scan before it.
    private var nextSubscriptionDeadline: NIODeadline = .distantFuture
    /// Time after a token's expiry before the session acts on it.
    let refreshGrace: TimeAmount
    private var lastActivity: NIODeadline
    private var wroteSinceTick = false
    private var pongDeadline: NIODeadline?

    init(now: NIODeadline, connectTimeout: TimeAmount = .seconds(10), refreshGrace: TimeAmount = .seconds(25)) {
        self.connectDeadline = now + connectTimeout
        self.lastActivity = now
        self.refreshGrace = max(refreshGrace, .zero)
    }

    /// The session is connected; its token (if any) expires at `tokenExpiry`.
    mutating func didConnect(tokenExpiry: NIODeadline?) {
        self.connected = true
        self.setTokenExpiry(tokenExpiry)
    }

    /// The client sent a new connection token (`refresh`) expiring at `tokenExpiry` (nil: never).
    mutating func didRefresh(tokenExpiry: NIODeadline?) {
        self.setTokenExpiry(tokenExpiry)
    }

    private mutating func setTokenExpiry(_ expiry: NIODeadline?) {
        guard let expiry, expiry < .distantFuture else {
            self.tokenExpiry = .distantFuture
            self.tokenDeadline = .distantFuture
            return
        }
        self.tokenExpiry = expiry
        self.tokenDeadline = expiry + self.refreshGrace
    }

    /// Whole seconds until the connection token expires (0 once it has); nil when it never does.
    func tokenTTL(now: NIODeadline) -> Int? {
        Self.ttl(self.tokenExpiry, now: now)
    }

    /// The subscription to `channel` was admitted (or refreshed) by a token expiring at `expiry`;
    /// nil: it does not expire (no token, or a token without `exp`).
    mutating func setSubscriptionExpiry(_ channel: String, _ expiry: NIODeadline?) {
        if let expiry, expiry < .distantFuture {
            self.subscriptionExpiries[channel] = expiry
            self.nextSubscriptionDeadline = min(self.nextSubscriptionDeadline, expiry + self.refreshGrace)
        } else if self.subscriptionExpiries.removeValue(forKey: channel) != nil, self.subscriptionExpiries.isEmpty {
            self.nextSubscriptionDeadline = .distantFuture
        }
        // A later deadline than `nextSubscriptionDeadline` after a removal only costs one scan.
    }

    /// Whole seconds until the token of the subscription to `channel` expires; nil: it never does.
    func subscriptionTTL(_ channel: String, now: NIODeadline) -> Int? {
        self.subscriptionExpiries[channel].flatMap { Self.ttl($0, now: now) }
    }

    /// The subscriptions whose token expired longer than the grace ago; they are forgotten here
    /// (the session ends them with 2501). Scans only when the earliest deadline has passed.
    mutating func expiredSubscriptions(now: NIODeadline) -> [String] {
        guard now >= self.nextSubscriptionDeadline else { return [] }
        var expired: [String] = []
        var next = NIODeadline.distantFuture
        for (channel, expiry) in self.subscriptionExpiries {
            let deadline = expiry + self.refreshGrace
            if now >= deadline {
                expired.append(channel)
            } else {
                next = min(next, deadline)
            }
        }
        for channel in expired { self.subscriptionExpiries.removeValue(forKey: channel) }
        self.nextSubscriptionDeadline = next
        return expired.sorted()
    }

    private static func ttl(_ expiry: NIODeadline, now: NIODeadline) -> Int? {
        guard expiry < .distantFuture else { return nil }
        guard expiry > now else { return 0 }
        return Int((expiry - now).nanoseconds / 1_000_000_000)
    }

    /// Something arrived from the client: a ping is answered by anything.
    mutating func didReceive() {
        self.pongDeadline = nil
    }

    /// Something was written to the client.
    mutating func didWrite() {
        self.wroteSinceTick = true
    }

    /// The ping `tick` asked for was written (it does not count as activity of its own).
    mutating func didWritePing() {
        self.wroteSinceTick = false
    }

    /// Whether a ping is waiting for its answer.
    var isAwaitingPong: Bool { self.pongDeadline != nil }

    /// - Parameters:
    ///   - pingInterval: seconds of outbound silence before a ping; 0 sends none.
    ///   - expectsPong: the transport can answer (WebSocket); others get pings as keep-alives only.
    mutating func tick(now: NIODeadline, pingInterval: Double, pongTimeout: Double, expectsPong: Bool) -> Action {
        guard self.connected else {
            return now >= self.connectDeadline ? .close(.badRequest("no connect command"), push: false) : .none
        }
        if now >= self.tokenDeadline { return .close(.tokenExpired, push: true) }
        guard pingInterval > 0 else { return .none }
        if let pongDeadline = self.pongDeadline, now >= pongDeadline { return .close(.noPong, push: false) }
        if self.wroteSinceTick {
            self.wroteSinceTick = false
            self.lastActivity = now
        }
        guard self.pongDeadline == nil, now - self.lastActivity >= .milliseconds(Int64(pingInterval * 1000) - 250) else {
            return .none
        }
        self.wroteSinceTick = false
        self.lastActivity = now
        if expectsPong { self.pongDeadline = now + .milliseconds(Int64(pongTimeout * 1000)) }
        return .ping
    }
}
