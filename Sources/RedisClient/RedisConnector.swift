import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RESP

/// Opens a TCP (or TLS, for `rediss://`) connection to Redis with the RESP decoder in its pipeline and runs the handshake.
enum RedisConnector {
    /// Most bytes the decoder holds for one incomplete reply (its buffer may grow to twice this before
    /// the check, per connection). Recovery reads a channel's whole history in one reply (`historySize`
    /// × message size: 5,000 messages of 64 KB are 320 MB), so the cap stays far above that.
    static let maximumReplyBytes = 1 << 30

    static func connect(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        handler: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<any Channel> {
        let tls: NIOSSLContext?
        do {
            tls = configuration.useTLS ? try Self.makeTLSContext(configuration) : nil
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        // Names are sent (SNI) and checked; an IP address is checked against the certificate's IP entries.
        let serverName = SocketAddressKind.isIPAddress(configuration.host) ? nil : configuration.host
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName))
                    }
                    // A reply still incomplete past 1 GiB ends the connection: the limits of one value
                    // (RESPLimits) do not bound a reply of many, and a server that never ends one must
                    // not grow the node without bound. No real reply comes near (1,000 history entries
                    // of 64 KB are 64 MB).
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(RESPTokenDecoder(), maximumBufferSize: Self.maximumReplyBytes))
                    try handler(channel)
                }
            }
            .connect(host: configuration.host, port: configuration.port)
    }

    /// The TLS client context of a `rediss://` configuration: TLS 1.2 or later, the server verified
    /// against the configured authorities (or the system's), our certificate when configured.
    static func makeTLSContext(_ configuration: RedisConfiguration) throws(RedisError) -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.certificateVerification = .fullVerification
        func load<T>(_ what: String, _ file: String, _ read: () throws -> T) throws(RedisError) -> T {
            do {
                return try read()
            } catch {
                throw RedisError(.invalidConfiguration, "TLS to Redis: cannot load the \(what) from \(file) (\(error))")
            }
        }
        if let file = configuration.tlsCAFile {
            tls.trustRoots = .certificates(try load("certificate authorities", file) { try NIOSSLCertificate.fromPEMFile(file) })
        }
        if let certificate = configuration.tlsCertificateFile, let key = configuration.tlsKeyFile {
            tls.certificateChain = try load("client certificate", certificate) {
                try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
            }
            tls.privateKey = .privateKey(try load("client key", key) { try NIOSSLPrivateKey(file: key, format: .pem) })
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw RedisError(.invalidConfiguration, "TLS to Redis: \(error)")
        }
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
