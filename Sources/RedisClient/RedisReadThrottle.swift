import Logging
import NIOCore

/// Holds back reads on a subscriber connection while its owner says it is behind: NIO asks for the
/// next read after each read cycle, and this handler passes the request on unless `hold.shouldHold`;
/// once holding, it asks `hold.mayResume` every 5 ms and reads again when it agrees. Unread messages
/// wait in the kernel and then in Redis's output buffer for the connection, not in the node's
/// memory. `onHold` hears each moment reads are held (at the start and at every check that keeps
/// holding), so the subscriber's timers know that replies were kept back on purpose.
final class RedisReadThrottle: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = Never

    static let recheckInterval = TimeAmount.milliseconds(5)
    /// At most one log line per this long.
    static let logInterval = TimeAmount.seconds(10)

    private let hold: RedisReadHold
    private let onHold: (NIODeadline) -> Void
    private let logger: Logger
    private var recheck: Scheduled<Void>?
    private var lastLogged: NIODeadline?
    /// When the current hold began.
    private var heldSince: NIODeadline?

    init(hold: RedisReadHold, logger: Logger, onHold: @escaping (NIODeadline) -> Void) {
        self.hold = hold
        self.onHold = onHold
        self.logger = logger
    }

    func read(context: ChannelHandlerContext) {
        guard self.recheck == nil else { return }  // already waiting; the recheck reads
        guard self.hold.shouldHold() else { return context.read() }
        let now = NIODeadline.now()
        self.heldSince = now
        self.held(at: now)
        self.scheduleRecheck(context: context)
    }

    private func scheduleRecheck(context: ChannelHandlerContext) {
        self.recheck = context.eventLoop.assumeIsolated().scheduleTask(in: Self.recheckInterval) {
            guard !self.hold.mayResume() else {
                self.recheck = nil
                self.heldSince = nil
                context.read()
                return
            }
            self.held(at: .now())
            self.scheduleRecheck(context: context)
        }
    }

    /// Reads are held at `now`: tells the subscriber, and logs at most every `logInterval` (a hold that
    /// lasts says so again, with its length, so one that never ends is seen).
    private func held(at now: NIODeadline) {
        self.onHold(now)
        guard self.lastLogged.map({ now - $0 >= Self.logInterval }) ?? true else { return }
        self.lastLogged = now
        let seconds = self.heldSince.map { (now - $0).nanoseconds / 1_000_000_000 } ?? 0
        self.logger.warning(
            "the node is behind on deliveries; reading from Redis waits", metadata: ["heldSeconds": "\(seconds)"])
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.recheck?.cancel()
        self.recheck = nil
    }
}

@available(*, unavailable)
extension RedisReadThrottle: Sendable {}
