import Logging
import NIOCore
import NIOPosix
@testable import SwitchboardServer

/// A node on a loopback port and an event loop group for its test clients, stopped whatever the
/// test does: Swift's `defer` cannot `await`, so `run` is the async `defer` of a loopback test.
enum LoopbackNode {
    /// Starts a node (`configure` edits its configuration; port 0, API key `test-key`) and a
    /// one-thread group for clients, runs `body`, then stops the node and shuts the group down
    /// whether `body` returned or threw, so a failing test leaves no node or threads behind.
    static func run(
        configure: (inout ServerConfiguration) -> Void = { _ in },
        _ body: (_ node: SwitchboardNode, _ port: Int, _ group: any EventLoopGroup) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let node: SwitchboardNode
        let port: Int
        do {
            (node, port) = try await NodeLoopbackTests.startNode(configure)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        do {
            try await body(node, port, group)
        } catch {
            await node.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        await node.stop()
        try await group.shutdownGracefully()
    }
}
