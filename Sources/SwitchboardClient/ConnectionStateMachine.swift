import SwitchboardCore

/// The life of a client's connection: when to open one, when to give up, how long to wait in
/// between. A plain value whose events return what the driver must do, so the rules of the
/// protocol's close-code table are tested without a socket.
///
///     idle/closed --start--> connecting --connected--> connected
///     connecting/connected --lost (reconnect)--> waiting --timerFired--> connecting
///     connecting/connected --lost (terminal code)--> closed
///     any --close--> closed
///
/// It also keeps the transport ladder: an attempt that ends without a connect reply may move the
/// next attempt to the next transport, at once rather than after the backoff.
struct ConnectionStateMachine {
    enum State: Equatable {
        case idle
        /// A connection is opening, or waits for its connect reply.
        case connecting
        case connected
        /// The next attempt is due after a delay.
        case waiting
        /// Ended for good: by `close()` (code nil) or by a code that forbids reconnecting.
        case closed(code: UInt16?, reason: String)
    }

    enum StartAction: Equatable {
        case openConnection
        case none
    }

    enum LostAction: Equatable {
        /// Wait `nanoseconds`, then `timerFired`.
        case scheduleReconnect(nanoseconds: Int64)
        /// Stop: fail what waits, end the subscriptions.
        case stop(code: UInt16, reason: String)
        case none
    }

    private(set) var state = State.idle
    var backoff: ReconnectBackoff
    private(set) var ladder: TransportLadder
    /// Whether the transport of the attempt under way opened (the `101`, the stream's `200`).
    private(set) var attemptOpened = false
    /// Whether the app can give a new token (then 3503 and error 109 reconnect instead of stopping).
    let renewsTokens: Bool

    init(backoff: ReconnectBackoff, renewsTokens: Bool, transports: [ClientTransport] = [.webSocket]) {
        self.backoff = backoff
        self.renewsTokens = renewsTokens
        self.ladder = TransportLadder(transports)
    }

    /// The transport the attempt under way (or the next one) uses.
    var transport: ClientTransport { self.ladder.current }

    /// `connect()`: from idle or closed, open a connection; nothing while one is open or opening.
    /// While waiting, the attempt starts now.
    mutating func start() -> StartAction {
        switch self.state {
        case .idle, .closed, .waiting:
            if case .closed = self.state { self.ladder.restart() }
            self.state = .connecting
            self.attemptOpened = false
            return .openConnection
        case .connecting, .connected:
            return .none
        }
    }

    /// The attempt's transport opened; its connect reply is next.
    mutating func opened() {
        guard case .connecting = self.state else { return }
        self.attemptOpened = true
    }

    /// The connect reply arrived.
    mutating func connected() -> Bool {
        guard case .connecting = self.state else { return false }
        self.state = .connected
        self.ladder.connected()
        return true
    }

    /// The connection has lived a while (the driver's `stableAfter`): the backoff starts over. Not
    /// at the connect reply: a connection that ends right after every connect reply (a node or
    /// proxy that answers and then drops it, each command POST refused) must keep backing off.
    mutating func stable() {
        guard case .connected = self.state else { return }
        self.backoff.reset()
    }

    /// A probe found the first transport (WebSocket) working while connected over a fallback: the
    /// next connection uses it (the driver then ends the fallback connection).
    mutating func climbBack() -> Bool {
        guard case .connected = self.state, self.ladder.canClimbBack else { return false }
        self.ladder.climbBack()
        return true
    }

    /// Whether to probe WebSocket while connected over a fallback transport.
    var probesForClimbBack: Bool {
        guard case .connected = self.state else { return false }
        return self.ladder.canClimbBack
    }

    /// The connection, or the attempt to make one, ended with `code` (nil: no close code, a network
    /// failure) after the node said `serverReconnect` in a `disconnect` push (nil: it said nothing).
    /// `random` in `0..<1` is the backoff's jitter.
    mutating func lost(code: UInt16?, reason: String, serverReconnect: Bool?, random: Double) -> LostAction {
        let wasConnected: Bool
        switch self.state {
        case .connecting:
            wasConnected = false
        case .connected:
            wasConnected = true
        case .idle, .waiting, .closed:
            return .none
        }
        let renewable = code == DisconnectCode.tokenExpired.rawValue && self.renewsTokens
        if let code, !renewable, Self.isTerminal(code) || serverReconnect == false {
            self.state = .closed(code: code, reason: reason)
            return .stop(code: code, reason: reason)
        }
        let drain = code == DisconnectCode.shutdown.rawValue || code == DisconnectCode.rebalance.rawValue
        let move = self.ladder.ended(opened: self.attemptOpened, wasConnected: wasConnected)
        self.state = .waiting
        if move == .next { return .scheduleReconnect(nanoseconds: 0) }  // the next transport, at once
        return .scheduleReconnect(nanoseconds: self.backoff.next(random: random, drain: drain))
    }

    /// The reconnect delay is over.
    mutating func timerFired() -> StartAction {
        guard case .waiting = self.state else { return .none }
        self.state = .connecting
        self.attemptOpened = false
        return .openConnection
    }

    /// `close()`: whether there was anything to close.
    mutating func close() -> Bool {
        switch self.state {
        case .closed:
            return false
        case .idle, .connecting, .connected, .waiting:
            self.state = .closed(code: nil, reason: "closed by the client")
            return true
        }
    }

    /// Codes after which a client does not come back on its own: 3500-3999, and the WebSocket codes
    /// of a client bug (1002 protocol error, 1007 invalid UTF-8). Not 1009 (message too big): this
    /// client refuses messages over its `maximumMessageSize` itself, so a 1009 means the node's
    /// limit is lower, and the next connection works until the next such message.
    static func isTerminal(_ code: UInt16) -> Bool {
        (3500...3999).contains(code) || code == 1002 || code == 1007
    }
}
