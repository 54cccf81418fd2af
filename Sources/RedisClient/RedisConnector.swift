import Logging
import NIOCore
import NIOPosix
import RESP

/// Opens a TCP connection to Redis with the RESP decoder in its pipeline and runs the handshake.
enum RedisConnector {
    static func connect(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        handler: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<any Channel> {
        guard !configuration.useTLS else {
            return eventLoop.makeFailedFuture(RedisError(.invalidConfiguration, "TLS (rediss://) is not supported yet"))
        }
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPTokenDecoder()))
                    try handler(channel)
                }
            }
            .connect(host: configuration.host, port: configuration.port)
    }

    /// The commands that prepare a fresh connection: `HELLO 3` or `AUTH`, then `SELECT`.
    static func handshakeCommands(_ configuration: RedisConfiguration, selectDatabase: Bool) -> [[RESPArgument]] {
        var commands: [[RESPArgument]] = []
        if configuration.useRESP3 {
            var hello: [RESPArgument] = ["HELLO", "3"]
            if let password = configuration.password {
                hello += ["AUTH", .string(configuration.username ?? "default"), .string(password)]
            }
            commands.append(hello)
        } else if let password = configuration.password {
            if let username = configuration.username {
                commands.append(["AUTH", .string(username), .string(password)])
            } else {
                commands.append(["AUTH", .string(password)])
            }
        }
        if selectDatabase, configuration.database != 0 {
            commands.append(["SELECT", .integer(Int64(configuration.database))])
        }
        return commands
    }

    /// A delay with full jitter: uniform in [0, min(maximum, initial * 2^attempt)].
    static func backoff(attempt: Int, configuration: RedisConfiguration) -> TimeAmount {
        let cap = min(
            configuration.maximumBackoff.nanoseconds,
            configuration.initialBackoff.nanoseconds << min(attempt, 20)
        )
        return .nanoseconds(Int64.random(in: 0...max(1, cap)))
    }
}
