import TestProcesses
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RedisClient
import RESP
import Testing

@Suite("RedisClient against a real redis-server", .serialized, .timeLimit(.minutes(5)))
struct RedisClientTests {
    let logger = Logger(label: "test")

    @Test("many concurrent callers are pipelined and each gets its own reply")
    func pipelining() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup(threads: 2) { group in
            let client = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: logger)
            let futures = (0..<500).map { i in
                client.send("SET", .string("k\(i)"), .string("v\(i)")).flatMap { _ in client.send("GET", .string("k\(i)")) }
            }
            for (i, future) in futures.enumerated() {
                #expect(try await future.get().string == "v\(i)")
            }
            let incr = try await client.send("INCRBY", "counter", .integer(5)).get()
            #expect(incr.int64 == 5)
            try await client.close().get()
        }
    }

    @Test("error replies fail the command with the server's message; the connection stays usable")
    func errorReply() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let client = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: logger)
            await #expect(throws: RedisError.self) { try await client.send("NOSUCHCOMMAND").get() }
            #expect(try await client.send("PING").get().string == "PONG")
            try await client.close().get()
        }
    }

    @Test("scripts run by SHA, and are loaded again after SCRIPT FLUSH (NOSCRIPT)")
    func scripts() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let client = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: logger)
            let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
            #expect(try await client.evaluate(script, keys: ["n"], arguments: [.integer(2)]).get().int64 == 2)
            #expect(try await client.evaluate(script, keys: ["n"], arguments: [.integer(3)]).get().int64 == 5)
            _ = try await client.send("SCRIPT", "FLUSH").get()
            #expect(try await client.evaluate(script, keys: ["n"], arguments: [.integer(1)]).get().int64 == 6)
            // The callback form, three in one pipeline after another flush: each answered once, in order.
            _ = try await client.send("SCRIPT", "FLUSH").get()
            let replies = (Int64(1)...3).map { increment in
                let promise = client.eventLoop.makePromise(of: Int64.self)
                var keysAndArguments = RESPArgumentList()
                keysAndArguments.append(.integer(1))
                keysAndArguments.append("n")
                keysAndArguments.append(.integer(increment))
                client.evaluate(script, keysAndArguments) { result in
                    promise.completeWith(result.map { $0.int64 ?? -1 }.mapError { $0 as any Error })
                }
                return promise.futureResult
            }
            var values: [Int64] = []
            for reply in replies { values.append(try await reply.get()) }
            #expect(values == [7, 9, 12])
            try await client.close().get()
        }
    }

    @Test("a reply that takes longer than the command timeout fails with .timeout")
    func timeout() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            var configuration = RedisConfiguration(port: redis.port)
            configuration.commandTimeout = .milliseconds(300)
            let client = RedisClient(configuration: configuration, eventLoop: group.next(), logger: logger)
            _ = try await client.send("PING").get()
            do {
                // 3 s against a 300 ms timeout: a loop stalled past the sleep would read the reply first.
                _ = try await client.send("DEBUG", "SLEEP", "3").get()
                Issue.record("DEBUG SLEEP returned within the timeout")
            } catch let error as RedisError {
                #expect(error.code == .timeout)
            }
            // The client goes on once Redis is done sleeping: PING until it answers (bounded), not after a fixed sleep.
            var pong: String?
            let deadline = NIODeadline.now() + .seconds(15)
            while pong == nil, NIODeadline.now() < deadline {
                pong = try? await client.send("PING").get().string
                if pong == nil { try await Task.sleep(nanoseconds: 50_000_000) }
            }
            #expect(pong == "PONG")
            try await client.close().get()
        }
    }

    @Test("commands fail fast while Redis is down and work again after it is back")
    func reconnect() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let client = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: logger)
            #expect(try await client.send("PING").get().string == "PONG")
            redis.kill()
            await #expect(throws: RedisError.self) { try await client.send("PING").get() }
            try redis.start()
            var answered = false
            for _ in 0..<100 where !answered {
                answered = (try? await client.send("PING").get().string) == "PONG"
                if !answered { try await Task.sleep(nanoseconds: 50_000_000) }
            }
            #expect(answered)
            try await client.close().get()
        }
    }

    @Test("the subscriber delivers messages, and after a Redis restart resubscribes and says so")
    func subscriber() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let loop = group.next()
            let messages = NIOLockedValueBox<[String]>([])
            let resubscribed = NIOLockedValueBox(0)
            let subscriber = RedisSubscriber(
                configuration: RedisConfiguration(port: redis.port), eventLoop: loop, logger: logger,
                onMessage: { channel, payload in messages.withLockedValue { $0.append("\(channel)=\(String(buffer: payload))") } },
                onResubscribed: { resubscribed.withLockedValue { $0 += 1 } }
            )
            let client = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: loop, logger: logger)
            try await subscriber.subscribe("a").get()
            try await subscriber.subscribe("b").get()
            _ = try await client.send("PUBLISH", "a", "1").get()
            _ = try await client.send("PUBLISH", "b", "2").get()
            _ = try await client.send("PUBLISH", "c", "3").get()
            try await waitUntil { messages.withLockedValue { $0.count } >= 2 }
            #expect(messages.withLockedValue { $0 } == ["a=1", "b=2"])
            try await subscriber.unsubscribe("b").get()
            redis.kill()
            try redis.start()
            try await waitUntil { resubscribed.withLockedValue { $0 } == 1 }
            var receivers: Int64 = 0
            for _ in 0..<50 where receivers == 0 {
                receivers = (try? await client.send("PUBLISH", "a", "4").get().int64) ?? 0
                if receivers == 0 { try await Task.sleep(nanoseconds: 50_000_000) }
            }
            _ = try await client.send("PUBLISH", "b", "5").get()
            try await waitUntil { messages.withLockedValue { $0.contains("a=4") } }
            #expect(!messages.withLockedValue { $0.contains("b=5") })
            try await subscriber.close().get()
            try await client.close().get()
        }
    }

    /// A subscriber logged in as an ACL user `sub` with `channels` allowed, what it receives
    /// (`channel=text`), how often it said it was resubscribed, and an admin connection to change the ACL.
    struct ACLSubscriber {
        let admin: RedisClient
        let subscriber: RedisSubscriber
        let messages = NIOLockedValueBox<[String]>([])
        let resubscribed = NIOLockedValueBox(0)

        init(port: Int, loop: any EventLoop, channels: String, commandTimeout: TimeAmount = .seconds(5)) async throws {
            let logger = Logger(label: "test")
            self.admin = RedisClient(configuration: RedisConfiguration(port: port), eventLoop: loop, logger: logger)
            _ = try await self.admin.send("ACL", "SETUSER", "sub", "on", ">sub-password", "~*", .string(channels), "+@all").get()
            let messages = self.messages, resubscribed = self.resubscribed
            self.subscriber = RedisSubscriber(
                configuration: RedisConfiguration(port: port, username: "sub", password: "sub-password", commandTimeout: commandTimeout),
                eventLoop: loop, logger: logger,
                onMessage: { channel, payload in messages.withLockedValue { $0.append("\(channel)=\(String(buffer: payload))") } },
                onResubscribed: { resubscribed.withLockedValue { $0 += 1 } }
            )
        }

        /// Publishes `text` in `channel` until Redis has a subscriber for it, then waits for it to arrive.
        func published(_ channel: String, _ text: String) async throws {
            var receivers: Int64 = 0
            for _ in 0..<100 where receivers == 0 {
                receivers = (try? await self.admin.send("PUBLISH", .string(channel), .string(text)).get().int64) ?? 0
                if receivers == 0 { try await Task.sleep(nanoseconds: 50_000_000) }
            }
            try await waitUntil { self.messages.withLockedValue { $0.contains("\(channel)=\(text)") } }
        }

        func close() async throws {
            try await self.subscriber.close().get()
            try await self.admin.close().get()
        }
    }

    @Test("a resubscribe refused with an error that names no channel (NOPERM) does not leave the channel stuck: the subscriber starts over, and once it is allowed again the channel is delivered and the owner told")
    func refusedResubscribeStartsOver() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let acl = try await ACLSubscriber(port: redis.port, loop: group.next(), channels: "&*")
            try await acl.subscriber.subscribe("feed").get()
            // Its channels withdrawn: Redis drops the subscriber's connection, and the resubscribe on
            // the next one is refused with NOPERM (an answer that names no channel).
            _ = try await acl.admin.send("ACL", "SETUSER", "sub", "resetchannels").get()
            try await waitUntilAsync { (try await acl.admin.send("ACL", "LOG").get().array?.count ?? 0) > 0 }
            // Allowed again: the channel is subscribed again (not left waiting for a confirmation
            // that never comes), its messages arrive, and the owner hears it was resubscribed.
            _ = try await acl.admin.send("ACL", "SETUSER", "sub", "&*").get()
            try await waitUntil { acl.resubscribed.withLockedValue { $0 } >= 1 }
            try await acl.published("feed", "back")
            try await acl.close()
        }
    }

    @Test("one channel refused (NOPERM) costs the others nothing: its caller fails, the connection stays, and the channel is not subscribed again")
    func oneRefusedChannelLeavesTheOthers() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let acl = try await ACLSubscriber(port: redis.port, loop: group.next(), channels: "&ok-*", commandTimeout: .seconds(1))
            try await acl.subscriber.subscribe("ok-feed").get()
            let connectionsBefore = try await Self.connectionsReceived(acl.admin)
            await #expect(throws: RedisError.self) { try await acl.subscriber.subscribe("denied").get() }
            // The refusal answers the one SUBSCRIBE it is for: nothing else is interrupted.
            try await acl.published("ok-feed", "still")
            #expect(try await acl.subscriber.subscribedChannels.get() == ["ok-feed"])
            #expect(try await Self.connectionsReceived(acl.admin) == connectionsBefore, "the subscriber reconnected")
            #expect(acl.resubscribed.withLockedValue { $0 } == 0, "an interruption was signalled")
            try await acl.close()
        }
    }

    @Test("a channel that was delivering and is then denied (ACL) costs the others nothing lasting: they are subscribed again and delivered on one connection, it is tried again alone, and delivered once allowed again")
    func deliveringChannelDenied() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let acl = try await ACLSubscriber(port: redis.port, loop: group.next(), channels: "&*")
            try await acl.subscriber.subscribe("ok-feed").get()
            try await acl.subscriber.subscribe("secret").get()
            // "secret" denied: Redis drops the connection; on the next ones it refuses "secret".
            _ = try await acl.admin.send("ACL", "SETUSER", "sub", "resetchannels", "&ok-*").get()
            try await waitUntil { acl.resubscribed.withLockedValue { $0 } >= 1 }
            try await acl.published("ok-feed", "still")
            // The others stay on one connection while "secret" is tried again alone.
            let connections = try await Self.connectionsReceived(acl.admin)
            try await Task.sleep(nanoseconds: 2_500_000_000)
            #expect(try await Self.connectionsReceived(acl.admin) == connections)
            #expect(try await acl.subscriber.subscribedChannels.get() == ["ok-feed"])
            // Allowed again: the retry subscribes it; its messages arrive.
            _ = try await acl.admin.send("ACL", "SETUSER", "sub", "&*").get()
            try await acl.published("secret", "back")
            try await acl.published("ok-feed", "again")
            try await acl.close()
        }
    }

    /// `total_connections_received` from INFO stats.
    static func connectionsReceived(_ client: RedisClient) async throws -> Int {
        let info = try await client.send("INFO", "stats").get().string ?? ""
        let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("total_connections_received:") }
        return line.flatMap { Int($0.split(separator: ":")[1]) } ?? 0
    }

    @Test("RESP3 (HELLO 3): commands, maps and pub/sub pushes")
    func resp3() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let loop = group.next()
            var configuration = RedisConfiguration(port: redis.port)
            configuration.useRESP3 = true
            let client = RedisClient(configuration: configuration, eventLoop: loop, logger: logger)
            _ = try await client.send("HSET", "h", "a", "1").get()
            let map = try await client.send("HGETALL", "h").get()
            guard case .map(let entries) = map.value else {
                Issue.record("HGETALL under RESP3 is not a map: \(map)")
                return
            }
            #expect(entries.map { ($0.key.string, $0.value.string) }.first! == ("a", "1"))
            let messages = NIOLockedValueBox<[String]>([])
            let subscriber = RedisSubscriber(
                configuration: configuration, eventLoop: loop, logger: logger,
                onMessage: { _, payload in messages.withLockedValue { $0.append(String(buffer: payload)) } },
                onResubscribed: {}
            )
            try await subscriber.subscribe("r3").get()
            _ = try await client.send("PUBLISH", "r3", "pushed").get()
            try await waitUntil { messages.withLockedValue { $0 } == ["pushed"] }
            try await subscriber.close().get()
            try await client.close().get()
        }
    }

    @Test("AUTH with a password")
    func auth() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let open = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: logger)
            _ = try await open.send("CONFIG", "SET", "requirepass", "s3cret").get()
            try await open.close().get()
            let anonymous = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: logger)
            await #expect(throws: RedisError.self) { try await anonymous.send("GET", "x").get() }
            try await anonymous.close().get()
            let authed = RedisClient(configuration: try RedisConfiguration(url: "redis://:s3cret@127.0.0.1:\(redis.port)/1"), eventLoop: group.next(), logger: logger)
            _ = try await authed.send("SET", "x", "in-db-1").get()
            #expect(try await authed.send("GET", "x").get().string == "in-db-1")
            try await authed.close().get()
        }
    }

    @Test("redis:// URLs")
    func urls() throws {
        let full = try RedisConfiguration(url: "redis://user:p%40ss@127.0.0.1:6380/2")
        #expect(full.host == "127.0.0.1" && full.port == 6380 && full.database == 2)
        #expect(full.username == "user" && full.password == "p@ss")
        let short = try RedisConfiguration(url: "redis://localhost")
        #expect(short.host == "localhost" && short.port == 6379 && short.password == nil)
        let ipv6 = try RedisConfiguration(url: "redis://[::1]:7000")
        #expect(ipv6.host == "::1" && ipv6.port == 7000)
        #expect(try RedisConfiguration(url: "rediss://h:1").useTLS)
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "http://x") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://h:notaport") }
    }
}

func waitUntil(seconds: Double = 10, _ condition: @Sendable () -> Bool) async throws {
    let deadline = NIODeadline.now() + .milliseconds(Int64(seconds * 1000))
    while !condition() {
        guard NIODeadline.now() < deadline else { throw TestFailure("condition not met within \(seconds) s") }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
}
