import TestProcesses
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RedisClient
import RESP
import SwitchboardBroker
import SwitchboardRedis
import Testing

/// Waits until an asynchronous condition holds, at most `seconds`.
func waitUntilAsync(seconds: Double = 10, _ condition: @Sendable () async throws -> Bool) async throws {
    let deadline = NIODeadline.now() + .milliseconds(Int64(seconds * 1000))
    while try await !condition() {
        guard NIODeadline.now() < deadline else { throw TestFailure("condition not met within \(seconds) s") }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
}

/// Redis stalled (SIGSTOP) or raced: the client's queue stays bounded and the subscriber's
/// bookkeeping stays what Redis holds (issue 10).
@Suite("Redis bounds and subscriber bookkeeping against a real redis-server", .serialized, .timeLimit(.minutes(5)))
struct RedisBackpressureTests {
    let logger = Logger(label: "test")

    @Test("while Redis is stalled, commands past the bound fail at once with a retryable error; the rest complete after")
    func boundedQueue() async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup { group in
            var configuration = RedisConfiguration(port: redis.port, commandTimeout: .seconds(30))
            configuration.maximumPendingCommands = 100
            let client = RedisClient(configuration: configuration, eventLoop: group.next(), logger: logger)
            #expect(try await client.send("PING").get().string == "PONG")
            redis.pause()
            let waiting = (0..<100).map { i in client.send("SET", .string("k\(i)"), "v") }
            let start = NIODeadline.now()
            let error = await #expect(throws: RedisError.self) { try await client.send("PING").get() }
            #expect(error?.code == .overloaded && error?.isRetryable == true)
            #expect(NIODeadline.now() - start < .seconds(2), "an overloaded command must fail at once, not wait for Redis")
            redis.resume()
            for future in waiting { #expect(try await future.get().string == "OK") }
            #expect(try await client.send("DBSIZE").get().int64 == 100)
            try await client.close().get()
        }
    }

    @Test("the bound also counts bytes; one command larger than the bound still goes when nothing waits")
    func boundedBytes() async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup { group in
            var configuration = RedisConfiguration(port: redis.port, commandTimeout: .seconds(30))
            configuration.maximumPendingBytes = 10_000
            let client = RedisClient(configuration: configuration, eventLoop: group.next(), logger: logger)
            let value = RESPArgument.string(String(repeating: "v", count: 4_000))
            #expect(try await client.send("SET", "alone", .string(String(repeating: "v", count: 50_000))).get().string == "OK")
            redis.pause()
            let first = client.send("SET", "a", value)
            let second = client.send("SET", "b", value)
            let error = await #expect(throws: RedisError.self) { try await client.send("SET", "c", value).get() }
            #expect(error?.code == .overloaded)
            redis.resume()
            #expect(try await first.get().string == "OK")
            #expect(try await second.get().string == "OK")
            #expect(try await client.send("SET", "c", value).get().string == "OK")
            try await client.close().get()
        }
    }

    static func numsub(_ admin: RedisClient, _ channel: String) async throws -> Int64 {
        let reply = try await admin.send("PUBSUB", "NUMSUB", .string(channel)).get()
        return reply.array?.last?.int64 ?? -1
    }

    @Test("subscribe, unsubscribe, subscribe in a row: Redis and the subscriber both end subscribed, and messages flow")
    func subscribeUnsubscribeSubscribe() async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup { group in
            let loop = group.next()
            let messages = NIOLockedValueBox<[String]>([])
            let subscriber = RedisSubscriber(
                configuration: RedisConfiguration(port: redis.port), eventLoop: loop, logger: logger,
                onMessage: { channel, payload in messages.withLockedValue { $0.append("\(channel)=\(String(buffer: payload))") } },
                onResubscribed: {}
            )
            let admin = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: loop, logger: logger)
            try await subscriber.subscribe("warm").get()
            // No awaiting in between: the UNSUBSCRIBE and the second SUBSCRIBE race the first confirmation.
            let first = subscriber.subscribe("x")
            let off = subscriber.unsubscribe("x")
            let second = subscriber.subscribe("x")
            try await first.get()
            try await off.get()
            try await second.get()
            try await waitUntilAsync {
                let held = try await subscriber.subscribedChannels.get()
                return try await Self.numsub(admin, "x") == 1 && held.contains("x")
            }
            _ = try await admin.send("PUBLISH", "x", "1").get()
            try await waitUntil { messages.withLockedValue { $0 } == ["x=1"] }

            // And the other way round: subscribe then unsubscribe before the confirmation: nothing left anywhere.
            let brief = subscriber.subscribe("y")
            try await subscriber.unsubscribe("y").get()
            try await brief.get()
            try await waitUntilAsync { try await Self.numsub(admin, "y") == 0 }
            try await waitUntilAsync { try await subscriber.trackedChannelCount.get() == 2 }  // warm and x
            _ = try await admin.send("PUBLISH", "y", "lost").get()
            _ = try await admin.send("PUBLISH", "x", "2").get()
            try await waitUntil { messages.withLockedValue { $0 }.count == 2 }
            #expect(messages.withLockedValue { $0 } == ["x=1", "x=2"])
            try await subscriber.close().get()
            try await admin.close().get()
        }
    }

    @Test("while its owner is behind the subscriber reads nothing more: messages wait at Redis, then all arrive in order")
    func heldReads() async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup { group in
            let loop = group.next()
            let behind = NIOLockedValueBox(false)
            let received = NIOLockedValueBox<[Int]>([])
            let subscriber = RedisSubscriber(
                configuration: RedisConfiguration(port: redis.port, commandTimeout: .seconds(2)), eventLoop: loop,
                logger: logger,
                onMessage: { channel, payload in
                    guard channel == "flood" else { return }
                    received.withLockedValue { $0.append(Int(String(buffer: payload).prefix { $0 != " " }) ?? -1) }
                },
                onResubscribed: {},
                readHold: RedisReadHold(shouldHold: { behind.withLockedValue { $0 } }, mayResume: { !behind.withLockedValue { $0 } })
            )
            let admin = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: logger)
            try await subscriber.subscribe("flood").get()
            _ = try await admin.send("PUBLISH", "flood", "0").get()
            try await waitUntil { received.withLockedValue { $0 } == [0] }
            behind.withLockedValue { $0 = true }
            // 12 MB: more than the kernel's socket buffers hold, so the rest waits in Redis's output buffer.
            let filler = String(repeating: "x", count: 4_000)
            let count = 3_000
            for start in stride(from: 1, through: count, by: 500) {
                let batch = (start..<min(start + 500, count + 1)).map { admin.send("PUBLISH", "flood", .string("\($0) \(filler)")) }
                for future in batch { _ = try await future.get() }
            }
            // A subscribe made now is confirmed behind the held messages: its timeout (2 s) counts
            // from the last hold, so it does not fail while the owner is behind (2.5 s here), and
            // has 2 s after it to read the 12 MB before the confirmation.
            let late = subscriber.subscribe("late")
            try await Task.sleep(nanoseconds: 1_000_000_000)
            let whileBehind = received.withLockedValue { $0.count }
            try await Task.sleep(nanoseconds: 1_500_000_000)
            #expect(received.withLockedValue { $0.count } == whileBehind, "nothing more is read while the owner is behind")
            #expect(whileBehind < count / 2, "\(whileBehind) of \(count) read while the owner was behind")
            let clients = try await admin.send("CLIENT", "LIST").get().string ?? ""
            let waiting = clients.split(separator: "\n").first { $0.contains(" sub=") && !$0.contains(" sub=0 ") }?
                .split(separator: " ").first { $0.hasPrefix("omem=") }.flatMap { Int($0.dropFirst(5)) } ?? 0
            #expect(waiting > 1_000_000, "the messages wait in Redis's output buffer (omem \(waiting))")
            behind.withLockedValue { $0 = false }
            try await waitUntil { received.withLockedValue { $0.count } == count + 1 }
            #expect(received.withLockedValue { $0 } == Array(0...count))
            try await late.get()
            try await subscriber.close().get()
            try await admin.close().get()
        }
    }

    @Test("a subscribe that times out while Redis is stalled is withdrawn: Redis does not keep it once it wakes")
    func timedOutSubscribeWithdrawn() async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup { group in
            let loop = group.next()
            let subscriber = RedisSubscriber(
                configuration: RedisConfiguration(port: redis.port, commandTimeout: .seconds(2)), eventLoop: loop, logger: logger,
                onMessage: { _, _ in }, onResubscribed: {}
            )
            let admin = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: loop, logger: logger)
            try await subscriber.subscribe("warm").get()
            redis.pause()
            let error = await #expect(throws: RedisError.self) { try await subscriber.subscribe("t").get() }
            #expect(error?.code == .timeout)
            redis.resume()
            try await waitUntilAsync {
                let tracked = try await subscriber.trackedChannelCount.get()
                return try await Self.numsub(admin, "t") == 0 && tracked == 1
            }
            // Redis holds exactly what the subscriber says it holds.
            let channels = try await admin.send("PUBSUB", "CHANNELS").get().array?.compactMap(\.string) ?? []
            let held = try await subscriber.subscribedChannels.get()
            #expect(Set(channels) == held)
            // And the channel can be subscribed again.
            try await subscriber.subscribe("t").get()
            #expect(try await Self.numsub(admin, "t") == 1)
            try await subscriber.close().get()
            try await admin.close().get()
        }
    }

    @Test("idempotency keys in Redis expire with their window; a refused key stores nothing")
    func idempotencyKeyTTL() async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup { group in
            let broker = RedisBroker(configuration: RedisConfiguration(port: redis.port), nodeID: "n1", eventLoop: group.next(), logger: logger)
            let admin = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: logger)
            try await broker.start { _ in }.get()
            var request = PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 0, historyTTL: 0, idempotencyKey: "key")
            request.idempotencyWindow = 120
            _ = try await broker.publish(request).get()
            let ttl = try await admin.send("TTL", "sb:{c}:i:key").get().int64 ?? -9
            #expect(ttl > 0 && ttl <= 120)
            request.idempotencyKey = String(repeating: "k", count: 129)
            await #expect(throws: BrokerError.self) { try await broker.publish(request).get() }
            #expect(try await admin.send("DBSIZE").get().int64 == 1)
            try await broker.shutdown().get()
            try await admin.close().get()
        }
    }
}

/// A Redis that takes the subscriber's connection and then never answers its handshake (AUTH).
@Suite("Redis subscriber handshake against a silent server", .timeLimit(.minutes(1)))
struct RedisSubscriberHandshakeTests {
    @Test("the handshake times out, its socket is closed, and the subscriber tries again (it was left connecting for good)")
    func silentHandshakeIsRetried() async throws {
        try await withEventLoopGroup { group in
            let accepted = NIOLockedValueBox(0)
            let open = NIOLockedValueBox(0)
            let server = try await ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    accepted.withLockedValue { $0 += 1 }
                    open.withLockedValue { $0 += 1 }
                    channel.closeFuture.whenComplete { _ in open.withLockedValue { $0 -= 1 } }
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                .bind(host: "127.0.0.1", port: 0).get()
            let problems = NIOLockedValueBox(0)
            let subscriber = RedisSubscriber(
                configuration: RedisConfiguration(port: server.localAddress!.port!, password: "secret", commandTimeout: .milliseconds(200)),
                eventLoop: group.next(), logger: Logger(label: "test"),
                onMessage: { _, _ in }, onResubscribed: {}, onConnectionProblem: { problems.withLockedValue { $0 += 1 } }
            )
            subscriber.start()
            try await waitUntilAsync(seconds: 10) { accepted.withLockedValue { $0 } >= 3 }
            #expect(problems.withLockedValue { $0 } >= 2)
            // Each timed-out attempt's socket was closed: at most the one in its handshake now is open.
            try await waitUntilAsync(seconds: 2) { open.withLockedValue { $0 } <= 1 }
            #expect(try await subscriber.isConnected.get() == false)
            try await subscriber.close().get()
            try await server.close()
        }
    }
}
