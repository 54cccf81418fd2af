import NIOCore
import NIOPosix

/// `serve --haproxy-agent-port`: HAProxy's `agent-check` asks this port about the node and gets one
/// line: `drain` while the node drains (HAProxy sends it no new connections and keeps the open ones),
/// otherwise `up` and the headroom, the share of `--max-connections` still free (`up 75%`). HAProxy
/// takes the percentage as the server's effective weight relative to its configured one, so a fuller
/// node gets fewer new connections and a full one (`up 0%`) none.
enum HAProxyAgent {
    /// The reply for a node with `connections` of `maximum` in use.
    static func reply(draining: Bool, connections: Int, maximum: Int) -> String {
        if draining { return "drain\n" }
        let maximum = max(1, maximum)
        let free = max(0, maximum - max(0, connections))
        // Rounded down, but a node with any room left says at least 1%.
        let percent = free == 0 ? 0 : max(1, Int((Int64(free) * 100) / Int64(maximum)))
        return "up \(percent)%\n"
    }

    /// Binds the agent listener: each connection gets the current reply and is closed.
    static func start(
        group: any EventLoopGroup, host: String, port: Int, reply: @escaping @Sendable () -> String
    ) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AgentReplyHandler(reply: reply))
                }
            }
            .bind(host: host, port: port)
            .get()
    }

    /// Writes the reply on connect and closes.
    final class AgentReplyHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private let reply: @Sendable () -> String

        init(reply: @escaping @Sendable () -> String) {
            self.reply = reply
        }

        func channelActive(context: ChannelHandlerContext) {
            let buffer = context.channel.allocator.buffer(string: self.reply())
            context.writeAndFlush(NIOAny(buffer)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}  // HAProxy may send a line; ignored
    }
}

@available(*, unavailable)
extension HAProxyAgent.AgentReplyHandler: Sendable {}
