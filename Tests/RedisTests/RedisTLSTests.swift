import TestProcesses
import Logging
import NIOCore
import NIOPosix
import RedisClient
import RESP
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
import SwitchboardRedis
import Testing

@Suite("rediss:// against a real redis-server listening for TLS only", .serialized, .timeLimit(.minutes(2)))
struct RedisTLSTests {
    let logger = Logger(label: "test")

    @Test("commands and pub/sub over TLS, the server verified against the configured authority")
    func brokerOverTLS() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let redis = try RedisServerProcess(tls: certificates)
        try await withEventLoopGroup { group in
            let configuration = try RedisConfiguration(url: "rediss://127.0.0.1:\(redis.port)?ssl_ca_certs=\(certificates.caCertificate)")
            let client = RedisClient(configuration: configuration, eventLoop: group.next(), logger: logger)
            #expect(try await client.send("SET", "k", "over tls").get().string == "OK")
            #expect(try await client.send("GET", "k").get().string == "over tls")
            try await client.close().get()
            // The broker's subscriber connection is TLS too: a publication comes back through pub/sub.
            let broker = RedisBroker(configuration: configuration, nodeID: "tls", eventLoop: group.next(), logger: logger)
            let recorder = BrokerConformance.EventRecorder()
            try await broker.start { recorder.record($0) }.get()
            try await broker.subscribe(channel: "c").get()
            let request = PublishRequest(channel: "c", data: ByteBuffer(string: "\"x\""), historySize: 10, historyTTL: 60)
            let position = try await broker.publish(request).get().position
            #expect(position.offset == 1)
            try await recorder.wait(seconds: 10) { !$0.publications(in: "c").isEmpty }
            try await broker.shutdown().get()
        }
    }

    @Test("a server whose certificate the configured authority did not sign is refused; so is plain TCP to a TLS port")
    func untrustedServer() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let redis = try RedisServerProcess(tls: certificates)
        try await withEventLoopGroup { group in
            var configuration = try RedisConfiguration(url: "rediss://127.0.0.1:\(redis.port)?ssl_ca_certs=\(certificates.otherCACertificate)")
            configuration.commandTimeout = .seconds(2)
            configuration.maximumBackoff = .milliseconds(100)
            let client = RedisClient(configuration: configuration, eventLoop: group.next(), logger: logger)
            await #expect(throws: (any Error).self) { try await client.send("PING").get() }
            try? await client.close().get()
            // The system's roots do not know the test authority either.
            var systemRoots = try RedisConfiguration(url: "rediss://127.0.0.1:\(redis.port)")
            systemRoots.commandTimeout = .seconds(2)
            let system = RedisClient(configuration: systemRoots, eventLoop: group.next(), logger: logger)
            await #expect(throws: (any Error).self) { try await system.send("PING").get() }
            try? await system.close().get()
            var plainConfiguration = try RedisConfiguration(url: "redis://127.0.0.1:\(redis.port)")
            plainConfiguration.commandTimeout = .seconds(2)
            let plain = RedisClient(configuration: plainConfiguration, eventLoop: group.next(), logger: logger)
            await #expect(throws: (any Error).self) { try await plain.send("PING").get() }
            try? await plain.close().get()
        }
    }

    @Test("mutual TLS: a server that requires client certificates accepts ours and refuses a client without one")
    func clientCertificates() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let redis = try RedisServerProcess(tls: certificates, requireClientCertificates: true)
        try await withEventLoopGroup { group in
            let url = "rediss://127.0.0.1:\(redis.port)?ssl_ca_certs=\(certificates.caCertificate)"
            let withCertificate = try RedisConfiguration(
                url: url + "&ssl_certfile=\(certificates.clientCertificate)&ssl_keyfile=\(certificates.clientKey)")
            let client = RedisClient(configuration: withCertificate, eventLoop: group.next(), logger: logger)
            #expect(try await client.send("PING").get().string == "PONG")
            try await client.close().get()
            var without = try RedisConfiguration(url: url)
            without.commandTimeout = .seconds(2)
            let refused = RedisClient(configuration: without, eventLoop: group.next(), logger: logger)
            await #expect(throws: (any Error).self) { try await refused.send("PING").get() }
            try? await refused.close().get()
        }
    }

    @Test("rediss:// URL parameters: files named, unknown ones and TLS files on redis:// refused, missing files reported")
    func urlParameters() throws {
        let configuration = try RedisConfiguration(url: "rediss://h:1/2?ssl_ca_certs=/a%20b.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem")
        #expect(configuration.useTLS && configuration.database == 2 && configuration.port == 1)
        #expect(configuration.tlsCAFile == "/a b.pem")
        #expect(configuration.tlsCertificateFile == "/c.pem" && configuration.tlsKeyFile == "/k.pem")
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "rediss://h?verify=no") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://h?ssl_ca_certs=/x.pem") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "rediss://h?ssl_certfile=/c.pem") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "rediss://h?ssl_ca_certs=") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "rediss://h?ssl_ca_certs=/nonexistent/ca.pem").checkTLSFiles() }
    }
}
