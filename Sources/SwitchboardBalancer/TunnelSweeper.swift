import NIOCore

/// One timer per event loop for the idle timeouts of every tunnel on that loop, instead of a scheduled
/// task per tunnel (a task, its closure and promise are a few hundred bytes per idle connection).
///
/// Every `interval` it closes the client side (the node side follows) of each tunnel with no byte either
/// way for its idle timeout, so a tunnel is cut between `idleTimeout` and `idleTimeout + interval` after
/// its last byte. Touched only on its event loop.
final class TunnelSweeper {
    private var tunnels: [ObjectIdentifier: (link: TunnelLink, client: any Channel)] = [:]
    private var task: RepeatedTask?

    /// The sweep period for an idle timeout: a tenth of it, between 100 ms and 5 s.
    static func interval(for idleTimeout: TimeAmount) -> TimeAmount {
        .nanoseconds(min(max(idleTimeout.nanoseconds / 10, 100_000_000), 5_000_000_000))
    }

    /// Starts sweeping `eventLoop` (call on it). The sweeper lives until `stop()` or the loop's shutdown.
    init(eventLoop: any EventLoop, interval: TimeAmount) {
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        self.task = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            this.value.sweep(now: .now())
        }
    }

    var count: Int { self.tunnels.count }

    func add(_ link: TunnelLink, client: any Channel) {
        self.tunnels[ObjectIdentifier(link)] = (link, client)
    }

    func remove(_ link: TunnelLink) {
        self.tunnels[ObjectIdentifier(link)] = nil
    }

    /// Closes the tunnels idle at `now`; returns how many.
    @discardableResult
    func sweep(now: NIODeadline) -> Int {
        var closed = 0
        for (_, entry) in self.tunnels where now - entry.link.lastActivity >= entry.link.idleTimeout {
            entry.client.close(promise: nil)
            closed += 1
        }
        return closed
    }

    func stop() {
        self.task?.cancel()
        self.task = nil
    }
}

@available(*, unavailable)
extension TunnelSweeper: Sendable {}

/// Each event loop's sweeper, found by the loop a tunnel lives on.
struct TunnelSweepers: Sendable {
    private let byLoop: [ObjectIdentifier: NIOLoopBound<TunnelSweeper>]

    /// Starts one sweeper on every loop of `group`.
    static func start(on group: any EventLoopGroup, idleTimeout: TimeAmount) async throws -> TunnelSweepers {
        let interval = TunnelSweeper.interval(for: idleTimeout)
        var byLoop: [ObjectIdentifier: NIOLoopBound<TunnelSweeper>] = [:]
        for loop in group.makeIterator() {
            byLoop[ObjectIdentifier(loop)] = try await loop.submit {
                NIOLoopBound(TunnelSweeper(eventLoop: loop, interval: interval), eventLoop: loop)
            }.get()
        }
        return TunnelSweepers(byLoop: byLoop)
    }

    /// The sweeper of `loop` (call on that loop).
    func sweeper(for loop: any EventLoop) -> TunnelSweeper? {
        self.byLoop[ObjectIdentifier(loop)]?.value
    }
}
