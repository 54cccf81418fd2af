import Logging
import NIOCore
import RedisClient
import SwitchboardBroker
import SwitchboardRedis
import SwitchboardServer

/// The broker a `--broker` value names: `memory` (one node) or a `redis://` or `rediss://` URL (many nodes).
enum BrokerChoice {
    /// A factory for the node, or an error a user can act on (a bad URL is found before anything starts).
    static func factory(for broker: String, logger: Logger) throws -> SwitchboardNode.BrokerFactory {
        if broker == "memory" || broker.isEmpty {
            return { eventLoops, _ in MemoryBroker(eventLoops: eventLoops) }
        }
        let redis: RedisConfiguration
        do {
            redis = try RedisConfiguration(url: broker)
            try redis.checkTLSFiles()
        } catch {
            throw ConfigurationError("--broker: \(error.message)")
        }
        return { eventLoops, nodeID in
            ShardedRedisBroker(configuration: redis, nodeID: nodeID, eventLoops: eventLoops, logger: logger)
        }
    }
}
