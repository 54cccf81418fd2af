import NIOCore
import SwitchboardCore

/// When a session must act on time: the deadline for its `connect`, server
/// pings after outbound silence, the pong deadline, and its token's expiry.
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
    private var tokenDeadline: NIODeadline = .distantFuture
    private var lastActivity: NIODeadline
    private var wroteSinceTick = false
    private var pongDeadline: NIODeadline?

    init(now: NIODeadline, connectTimeout: TimeAmount = .seconds(10)) {
        self.connectDeadline = now + connectTimeout
        self.lastActivity = now
    }

    /// The session is connected; its token (if any) expires at `tokenDeadline`.
    mutating func didConnect(tokenDeadline: NIODeadline?) {
        self.connected = true
        self.tokenDeadline = tokenDeadline ?? .distantFuture
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
