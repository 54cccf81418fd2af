import NIOCore

/// The timer behind a connection's request deadline (the head, then the body): armed for an
/// instant, and stopped the moment the request is in or the connection is handed on. One of these
/// in `ProxyProtocolHandler`, `HandshakeRouter` and `HTTPHandler` replaces the cancel-and-forget
/// pairs each kept by hand.
///
/// A plain value inside its handler, touched only on the handler's event loop.
struct RequestDeadlineTimer {
    private var scheduled: Scheduled<Void>?

    /// Runs `fire` on `eventLoop` at `deadline`, instead of whatever was armed before.
    mutating func arm(at deadline: NIODeadline, on eventLoop: any EventLoop, _ fire: @escaping @Sendable () -> Void) {
        self.stop()
        self.scheduled = eventLoop.scheduleTask(deadline: deadline, fire)
    }

    /// Stops the timer; nothing happens when it is not armed or has fired.
    mutating func stop() {
        self.scheduled?.cancel()
        self.scheduled = nil
    }

    /// Forgets a timer that has just fired (from inside `fire`).
    mutating func fired() {
        self.scheduled = nil
    }
}
