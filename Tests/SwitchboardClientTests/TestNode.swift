import Logging
import SwitchboardServer

/// A real node in this process on a loopback port picked by the system, for the client's tests.
enum TestNode {
    /// A started node (memory broker unless `broker`), API key `test-key`, rebalancing off, a short drain.
    static func start(
        _ configure: (inout ServerConfiguration) -> Void = { _ in }, broker: SwitchboardNode.BrokerFactory? = nil
    ) async throws -> (SwitchboardNode, Int) {
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.apiKey = "test-key"
        configuration.logLevel = "error"
        configuration.rebalance = false
        configuration.drainSeconds = 0.2
        configure(&configuration)
        let logger = Logger(label: "client-test-node")
        let node =
            if let broker {
                try SwitchboardNode(configuration: configuration, logger: logger, makeBroker: broker)
            } else {
                try SwitchboardNode(configuration: configuration, logger: logger)
            }
        return (node, try await node.start())
    }

    /// Runs `body` with the port of a started node, and stops the node whatever happens.
    static func with(_ configure: (inout ServerConfiguration) -> Void = { _ in }, _ body: (Int) async throws -> Void) async throws {
        let (node, port) = try await Self.start(configure)
        do {
            try await body(port)
        } catch {
            await node.stop()
            throw error
        }
        await node.stop()
    }
}
