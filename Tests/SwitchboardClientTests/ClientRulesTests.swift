import NIOCore
import SwitchboardCore
import Testing

@testable import SwitchboardClient

@Suite("Swift client: rules without sockets")
struct ClientRulesTests {
    // MARK: backoff

    @Test("backoff caps double from the minimum up to the maximum, and the delay is the jitter times the cap")
    func backoffCaps() {
        var backoff = ReconnectBackoff(minimumNanoseconds: 500, maximumNanoseconds: 20_000)
        var caps: [Int64] = []
        for _ in 0..<8 { caps.append(backoff.next(random: 0.9999999)) }
        #expect(caps == [499, 999, 1_999, 3_999, 7_999, 15_999, 19_999, 19_999])
        #expect(backoff.next(random: 0) == 0)
        #expect(backoff.next(random: 0.5) == 10_000)
        backoff.reset()
        #expect(backoff.next(random: 0.5) == 250)
    }

    @Test("a drain or rebalance spreads clients over at least four times the minimum")
    func backoffDrainFloor() {
        var backoff = ReconnectBackoff(minimumNanoseconds: 500, maximumNanoseconds: 20_000)
        #expect(backoff.next(random: 0.5, drain: true) == 1_000)
        var small = ReconnectBackoff(minimumNanoseconds: 500, maximumNanoseconds: 1_000)
        #expect(small.next(random: 0.5, drain: true) == 500)  // still capped by the maximum
    }

    @Test("thousands of attempts neither overflow nor trap, and a bad jitter value is clamped")
    func backoffNoOverflow() {
        var backoff = ReconnectBackoff(minimumNanoseconds: Int64.max / 2, maximumNanoseconds: Int64.max)
        for _ in 0..<10_000 { _ = backoff.next(random: 0.999) }
        #expect(backoff.next(random: .nan) == 0)
        #expect(backoff.next(random: 7) == Int64.max)
    }

    // MARK: the close-code table

    static let reconnecting: [UInt16?] = [nil, 1000, 1001, 1006, 1009, 1011, 3000, 3001, 3002, 3004, 3005, 3006, 3499]
    static let terminal: [UInt16] = [3500, 3501, 3502, 3503, 3504, 3507, 3999, 1002, 1007]

    static func connected(renewsTokens: Bool = false) -> ConnectionStateMachine {
        var machine = ConnectionStateMachine(
            backoff: ReconnectBackoff(minimumNanoseconds: 1_000, maximumNanoseconds: 8_000), renewsTokens: renewsTokens)
        #expect(machine.start() == .openConnection)
        let connected = machine.connected()
        #expect(connected)
        return machine
    }

    @Test("codes that say reconnect schedule an attempt", arguments: reconnecting)
    func reconnects(code: UInt16?) {
        var machine = Self.connected()
        guard case .scheduleReconnect = machine.lost(code: code, reason: "", serverReconnect: nil, random: 0.5) else {
            Issue.record("code \(String(describing: code)) did not reconnect")
            return
        }
        #expect(machine.state == .waiting)
        #expect(machine.timerFired() == .openConnection)
        #expect(machine.state == .connecting)
    }

    @Test("codes that forbid reconnecting stop the client", arguments: terminal)
    func stops(code: UInt16) {
        var machine = Self.connected()
        #expect(machine.lost(code: code, reason: "r", serverReconnect: nil, random: 0.5) == .stop(code: code, reason: "r"))
        #expect(machine.state == .closed(code: code, reason: "r"))
        #expect(machine.timerFired() == .none)
    }

    @Test("an expired token reconnects when the app gives new tokens, and a disconnect push saying no stops")
    func tokenRenewalAndServerWord() {
        var renewing = Self.connected(renewsTokens: true)
        guard case .scheduleReconnect = renewing.lost(code: 3503, reason: "", serverReconnect: false, random: 0.5) else {
            Issue.record("3503 with getToken did not reconnect")
            return
        }
        var told = Self.connected()
        #expect(told.lost(code: 3000, reason: "", serverReconnect: false, random: 0.5) == .stop(code: 3000, reason: ""))
    }

    @Test("the backoff grows over failed attempts and starts again once a connection lived `stableAfter`, not at its connect reply")
    func backoffResetsOnConnect() {
        var machine = Self.connected()
        var delays: [Int64] = []
        for _ in 0..<4 {
            guard case .scheduleReconnect(let delay) = machine.lost(code: nil, reason: "", serverReconnect: nil, random: 0.5) else {
                Issue.record("no reconnect")
                return
            }
            delays.append(delay)
            _ = machine.timerFired()
        }
        #expect(delays == [500, 1_000, 2_000, 4_000])
        // A connection that ends right after its connect reply (a node that answers, then drops it)
        // keeps backing off: no tight loop of reconnects.
        do { let connected = machine.connected(); #expect(connected) }
        #expect(machine.lost(code: nil, reason: "", serverReconnect: nil, random: 0.5) == .scheduleReconnect(nanoseconds: 4_000))
        _ = machine.timerFired()
        do { let connected = machine.connected(); #expect(connected) }
        machine.stable()
        #expect(machine.lost(code: nil, reason: "", serverReconnect: nil, random: 0.5) == .scheduleReconnect(nanoseconds: 500))
        machine.stable()  // not connected: nothing to reset
        #expect(ClientDriver.stableAfter == .seconds(5))
    }

    @Test("a token ttl from the node becomes a refresh delay without trapping, whatever its value")
    func refreshDelays() {
        #expect(ClientDriver.refreshDelay(ttl: 10) == .milliseconds(8_000))
        #expect(ClientDriver.refreshDelay(ttl: 0) == .milliseconds(500))
        #expect(ClientDriver.refreshDelay(ttl: -99_999_999_999_999_999) == .milliseconds(500))
        #expect(ClientDriver.refreshDelay(ttl: .min) == .milliseconds(500))
        #expect(ClientDriver.refreshDelay(ttl: .max) == .milliseconds(Int64(86_400 * 365 * 800)))
    }

    @Test("close ends any state once; a loss after close changes nothing; connect() while waiting tries now")
    func closeAndStart() {
        var machine = Self.connected()
        _ = machine.lost(code: nil, reason: "", serverReconnect: nil, random: 0.5)
        #expect(machine.start() == .openConnection)
        #expect(machine.start() == .none)
        let closed = machine.close()
        let closedAgain = machine.close()
        #expect(closed && !closedAgain)
        #expect(machine.lost(code: nil, reason: "", serverReconnect: nil, random: 0.5) == .none)
        #expect(machine.start() == .openConnection)
    }

    // MARK: subscriptions

    static func publication(_ offset: UInt64?) -> ClientPublication {
        ClientPublication(offset: offset, data: try! RawJSON(validating: Array("\(offset ?? 0)".utf8)))
    }

    @Test("a first subscribe starts from the node's position; each live publication is delivered once")
    func liveDeliveryOnce() {
        var table = SubscriptionTable()
        let added = table.add("c", since: nil)
        let addedAgain = table.add("c", since: nil)
        #expect(added && !addedAgain)
        #expect(table.startConnect().map(\.channel) == ["c"])
        #expect(table.publication("c", Self.publication(1)) == .ignore)  // before the answer
        let events = table.subscribed("c", SubscribeResult(position: StreamPosition(offset: 4, epoch: "e"), recoverable: true))
        #expect(events == [.subscribed(position: StreamPosition(offset: 4, epoch: "e"), recovered: nil)])
        #expect(table.publication("c", Self.publication(4)) == .duplicate)
        #expect(table.publication("c", Self.publication(5)) == .deliver)
        #expect(table.publication("c", Self.publication(5)) == .duplicate)
        #expect(table.publication("c", Self.publication(6)) == .deliver)
        #expect(table.entry("c")?.position == StreamPosition(offset: 6, epoch: "e"))
        #expect(table.publication("other", Self.publication(1)) == .ignore)
    }

    @Test("after a reconnect a channel resubscribes from its last position, and the recovered list is delivered without what was seen")
    func recovery() {
        var table = SubscriptionTable()
        _ = table.add("c", since: nil)
        _ = table.startConnect()
        _ = table.subscribed("c", SubscribeResult(position: StreamPosition(offset: 2, epoch: "e"), recoverable: true))
        #expect(table.publication("c", Self.publication(3)) == .deliver)
        table.connectionLost()
        #expect(table.entry("c")?.phase == .waiting)
        let subs = table.startConnect()
        #expect(subs.count == 1 && subs[0].since == StreamPosition(offset: 3, epoch: "e"))
        let list = (2...6).map { Self.publication(UInt64($0)) }
        let events = table.subscribed(
            "c",
            SubscribeResult(position: StreamPosition(offset: 6, epoch: "e"), recoverable: true, recovered: true, publications: list))
        #expect(
            events == [
                .subscribed(position: StreamPosition(offset: 6, epoch: "e"), recovered: true),
                .publication(Self.publication(4)), .publication(Self.publication(5)), .publication(Self.publication(6)),
            ])
        #expect(table.publication("c", Self.publication(6)) == .duplicate)
        #expect(table.publication("c", Self.publication(7)) == .deliver)
    }

    @Test("a recovery that failed says unrecovered and goes on from the node's new position")
    func unrecovered() {
        var table = SubscriptionTable()
        _ = table.add("c", since: StreamPosition(offset: 10, epoch: "old"))
        #expect(table.startConnect()[0].since == StreamPosition(offset: 10, epoch: "old"))
        let now = StreamPosition(offset: 3, epoch: "new")
        let events = table.subscribed("c", SubscribeResult(position: now, recoverable: true, recovered: false))
        #expect(events == [.subscribed(position: now, recovered: false), .unrecovered(position: now)])
        #expect(table.publication("c", Self.publication(4)) == .deliver)
    }

    @Test("a publication past a hole is not delivered: the subscription is made again from the last one delivered; the same hole again is delivered as a loss")
    func holeInLiveOffsets() {
        var table = SubscriptionTable()
        _ = table.add("c", since: nil)
        _ = table.startConnect()
        _ = table.subscribed("c", SubscribeResult(position: StreamPosition(offset: 4, epoch: "e"), recoverable: true))
        #expect(table.publication("c", Self.publication(5)) == .deliver)
        #expect(table.publication("c", Self.publication(7)) == .resubscribe(since: StreamPosition(offset: 5, epoch: "e")))
        #expect(table.entry("c")?.phase == .subscribing)
        #expect(table.publication("c", Self.publication(8)) == .ignore, "nothing delivered until the answer")
        #expect(table.unsubscribed("c", code: 2500) == .ignore, "a 2500 for the subscription being replaced makes no second subscribe")
        #expect(table.startSubscribe("c") == .some(StreamPosition(offset: 5, epoch: "e")))
        // The recovery brings what the hole held, and what followed, once.
        let events = table.subscribed(
            "c", SubscribeResult(position: StreamPosition(offset: 8, epoch: "e"), recoverable: true, recovered: true,
                publications: (6...8).map { Self.publication(UInt64($0)) }))
        #expect(events.dropFirst() == [.publication(Self.publication(6)), .publication(Self.publication(7)), .publication(Self.publication(8))])
        // A hole the node cannot fill: asked for once, then delivered as lost (no loop).
        #expect(table.publication("c", Self.publication(10)) == .resubscribe(since: StreamPosition(offset: 8, epoch: "e")))
        _ = table.startSubscribe("c")
        _ = table.subscribed("c", SubscribeResult(position: StreamPosition(offset: 8, epoch: "e"), recoverable: true, recovered: true))
        #expect(table.publication("c", Self.publication(10)) == .deliverAfterLoss(StreamPosition(offset: 9, epoch: "e")))
        #expect(table.entry("c")?.position == StreamPosition(offset: 10, epoch: "e"))
        #expect(table.publication("c", Self.publication(11)) == .deliver)
    }

    @Test("a recovery with a hole, one that stops short of the node's position, or an answer without recovered is taken as not recovered")
    func recoveryWithAHole() {
        for result in [
            SubscribeResult(position: StreamPosition(offset: 6, epoch: "e"), recoverable: true, recovered: true,
                publications: [Self.publication(4), Self.publication(6)]),
            SubscribeResult(position: StreamPosition(offset: 9, epoch: "e"), recoverable: true, recovered: true,
                publications: (4...6).map { Self.publication(UInt64($0)) }),
            SubscribeResult(position: StreamPosition(offset: 9, epoch: "e"), recoverable: true),
        ] {
            var table = SubscriptionTable()
            _ = table.add("c", since: StreamPosition(offset: 3, epoch: "e"))
            _ = table.startConnect()
            let events = table.subscribed("c", result)
            #expect(events == [.subscribed(position: result.position, recovered: false), .unrecovered(position: result.position)], "\(result)")
        }
    }

    @Test("refusals in a row count until the node answers for the channel: a long-poll channel taken as subscribed when its poll goes out keeps its count")
    func retriesCountUntilAnswered() {
        var table = SubscriptionTable()
        _ = table.add("c", since: StreamPosition(offset: 3, epoch: "e"))
        _ = table.startConnect()
        #expect(table.countRetry("c") == 1)
        #expect(table.countRetry("c") == 2)
        _ = table.subscribed("c", SubscribeResult(position: StreamPosition(offset: 3, epoch: "e"), recoverable: true, recovered: true), settled: false)
        #expect(table.entry("c")?.retries == 2)
        #expect(table.publication("c", Self.publication(4)) == .deliver)
        #expect(table.entry("c")?.retries == 0)
        #expect(table.countRetry("c") == 1)
        _ = table.startSubscribe("c")
        _ = table.subscribed("c", SubscribeResult(position: StreamPosition(offset: 4, epoch: "e"), recoverable: true, recovered: true))
        #expect(table.entry("c")?.retries == 0)
    }

    @Test("a temporary refusal is tried again after a second, doubling up to 30 s, with jitter")
    func retryDelays() {
        #expect(ClientDriver.retryDelay(retries: 1, random: 0.5) == .seconds(1))
        #expect(ClientDriver.retryDelay(retries: 2, random: 0.5) == .seconds(2))
        #expect(ClientDriver.retryDelay(retries: 6, random: 0.5) == .seconds(30))
        #expect(ClientDriver.retryDelay(retries: 60, random: 0.5) == .seconds(30))
        #expect(ClientDriver.retryDelay(retries: 60, random: 0) == .seconds(15))
        #expect(ClientDriver.retryDelay(retries: 1, random: 1) == .milliseconds(1500))
    }

    @Test("an unsubscribe push from 2500 up resubscribes from the position; below it the subscription ends")
    func unsubscribePushes() {
        var table = SubscriptionTable()
        _ = table.add("c", since: nil)
        _ = table.startConnect()
        _ = table.subscribed("c", SubscribeResult(position: StreamPosition(offset: 8, epoch: "e"), recoverable: true))
        let serial = table.entry("c")!.serial
        #expect(table.unsubscribed("c", code: 2500) == .resubscribe(since: StreamPosition(offset: 8, epoch: "e"), serial: serial))
        #expect(table.publication("c", Self.publication(9)) == .ignore)  // not live until the answer
        #expect(table.unsubscribed("c", code: 2000) == .ended)
        #expect(table.entry("c") == nil)
        #expect(table.unsubscribed("c", code: 2000) == .ignore)
    }

    @Test("2501 (subscription token expired) subscribes again only a channel with a token source; other codes end it")
    func tokenExpiredPush() {
        var table = SubscriptionTable()
        _ = table.add("$t", since: nil, usesToken: true)
        _ = table.add("plain", since: nil)
        _ = table.add("other", since: nil, usesToken: true)
        #expect(table.startConnect().map(\.channel) == ["plain"], "token channels are not in connect.subs")
        #expect(table.startSubscribe("$t") == .some(nil))
        _ = table.subscribed("$t", SubscribeResult(position: StreamPosition(offset: 1, epoch: "e"), recoverable: true))
        let serial = table.entry("$t")!.serial
        #expect(table.unsubscribed("$t", code: 2501) == .resubscribe(since: StreamPosition(offset: 1, epoch: "e"), serial: serial))
        #expect(table.unsubscribed("plain", code: 2501) == .ended)
        #expect(table.unsubscribed("other", code: 2502) == .ended)
    }

    @Test("a subscribe with no answer by its deadline is given up and counted as a retry; only the subscribe awaited counts, and a late answer to one given up is ignored")
    func subscribeDeadline() {
        var table = SubscriptionTable()
        let three = StreamPosition(offset: 3, epoch: "e")
        _ = table.add("c", since: three)
        #expect(table.startSubscribe("c") == .some(three))
        table.subscribeSent("c", id: 7)
        #expect(table.subscribeTimedOut("c", id: 6) == .ignore, "not its subscribe")
        #expect(table.subscribeTimedOut("c", id: 7) == .retry(retries: 1))
        #expect(table.subscribeTimedOut("c", id: 7) == .ignore, "one deadline per subscribe")
        #expect(table.entry("c")?.phase == .subscribing)
        #expect(table.publication("c", Self.publication(4)) == .ignore, "what the lost subscription pushes is not delivered")
        #expect(table.subscribeAnswered("c", id: 7) == false, "the late answer to the subscribe given up")
        #expect(table.unsubscribed("c", code: 2500) == .ignore, "being made again already")
        // Made again, and lost again: the retries grow (the delay with them).
        #expect(table.startSubscribe("c") == .some(three))
        table.subscribeSent("c", id: 9)
        #expect(table.subscribeTimedOut("c", id: 9) == .retry(retries: 2))
        _ = table.startSubscribe("c")
        table.subscribeSent("c", id: 11)
        #expect(table.subscribeAnswered("c", id: 9) == false)
        #expect(table.subscribeAnswered("c", id: 11) == true)
        #expect(table.subscribeAnswered("c", id: 11) == false, "answered once")
        #expect(table.subscribeTimedOut("c", id: 11) == .ignore, "answered: its deadline does nothing")
        let events = table.subscribed(
            "c", SubscribeResult(position: StreamPosition(offset: 5, epoch: "e"), recoverable: true, recovered: true,
                publications: [Self.publication(4), Self.publication(5)]))
        #expect(events == [.subscribed(position: StreamPosition(offset: 5, epoch: "e"), recovered: true), .publication(Self.publication(4)), .publication(Self.publication(5))])
        #expect(table.entry("c")?.retries == 0, "settled")
        // Command ids start over on each connection: one sent on a connection that ended is forgotten.
        _ = table.add("d", since: nil)
        _ = table.startSubscribe("d")
        table.subscribeSent("d", id: 12)
        table.connectionLost()
        #expect(table.subscribeTimedOut("d", id: 12) == .ignore)
        #expect(table.subscribeAnswered("d", id: 12) == false)
        // The same id for another channel, or for an entry made again after an unsubscribe, is not it.
        _ = table.startSubscribe("d")
        table.subscribeSent("d", id: 1)
        #expect(table.subscribeAnswered("c", id: 1) == false)
        table.remove("d")
        _ = table.add("d", since: nil)
        _ = table.startSubscribe("d")
        #expect(table.subscribeTimedOut("d", id: 1) == .ignore)
    }

    @Test("2500 again and again: the first subscribes again at once, the next ones after a growing delay, even when the node took each subscribe; a live publication starts the count over")
    func repeatedInsufficientState() {
        var table = SubscriptionTable()
        _ = table.add("c", since: nil)
        _ = table.startConnect()
        let eight = StreamPosition(offset: 8, epoch: "e")
        _ = table.subscribed("c", SubscribeResult(position: eight, recoverable: true))
        let serial = table.entry("c")!.serial
        #expect(table.unsubscribed("c", code: 2500) == .resubscribe(since: eight, serial: serial))
        for retries in 1...7 {
            #expect(table.startSubscribe("c") == .some(eight))
            table.subscribeSent("c", id: UInt64(retries))
            #expect(table.subscribeAnswered("c", id: UInt64(retries)) == true)
            _ = table.subscribed("c", SubscribeResult(position: eight, recoverable: true, recovered: true))  // the node takes it,
            #expect(table.unsubscribed("c", code: 2500) == .resubscribeLater(retries: retries))  // and loses it again
            #expect(table.entry("c")?.phase == .subscribing)
            #expect(table.unsubscribed("c", code: 2500) == .ignore, "one subscribe at a time")
        }
        #expect(ClientDriver.retryDelay(retries: 7, random: 0.5) == .seconds(30))
        // Recovered publications are not enough (such a node may recover a few each round); a live one is.
        _ = table.startSubscribe("c")
        _ = table.subscribed(
            "c", SubscribeResult(position: StreamPosition(offset: 9, epoch: "e"), recoverable: true, recovered: true, publications: [Self.publication(9)]))
        #expect(table.unsubscribed("c", code: 2500) == .resubscribeLater(retries: 8))
        _ = table.startSubscribe("c")
        _ = table.subscribed("c", SubscribeResult(position: StreamPosition(offset: 9, epoch: "e"), recoverable: true, recovered: true))
        #expect(table.publication("c", Self.publication(10)) == .deliver)
        #expect(table.unsubscribed("c", code: 2500) == .resubscribe(since: StreamPosition(offset: 10, epoch: "e"), serial: serial))
        // 2501 for a channel with a token source counts the same way.
        _ = table.add("$t", since: nil, usesToken: true)
        _ = table.startSubscribe("$t")
        _ = table.subscribed("$t", SubscribeResult(position: eight, recoverable: true))
        #expect(table.unsubscribed("$t", code: 2501) == .resubscribe(since: eight, serial: table.entry("$t")!.serial))
        _ = table.startSubscribe("$t")
        _ = table.subscribed("$t", SubscribeResult(position: eight, recoverable: true, recovered: true))
        #expect(table.unsubscribed("$t", code: 2501) == .resubscribeLater(retries: 1))
    }

    @Test("2500s a minute or more apart are each a first: a quiet channel removed now and then is subscribed again at once, every time")
    func removalsFarApart() {
        var table = SubscriptionTable()
        _ = table.add("c", since: nil)
        _ = table.startConnect()
        let eight = StreamPosition(offset: 8, epoch: "e")
        _ = table.subscribed("c", SubscribeResult(position: eight, recoverable: true))
        let serial = table.entry("c")!.serial
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        for _ in 1...5 {
            #expect(table.unsubscribed("c", code: 2500, now: now) == .resubscribe(since: eight, serial: serial))
            _ = table.startSubscribe("c")
            _ = table.subscribed("c", SubscribeResult(position: eight, recoverable: true, recovered: true))
            now = now + SubscriptionTable.removalMemory + .seconds(1)
        }
        // Within the minute, the second in a row backs off.
        #expect(table.unsubscribed("c", code: 2500, now: now) == .resubscribe(since: eight, serial: serial))
        _ = table.startSubscribe("c")
        _ = table.subscribed("c", SubscribeResult(position: eight, recoverable: true, recovered: true))
        #expect(table.unsubscribed("c", code: 2500, now: now + .seconds(5)) == .resubscribeLater(retries: 1))
    }

    @Test("a channel without history delivers every publication (no offsets to compare)")
    func noHistory() {
        var table = SubscriptionTable()
        _ = table.add("c", since: nil)
        _ = table.startConnect()
        _ = table.subscribed("c", SubscribeResult(position: nil, recoverable: false))
        #expect(table.publication("c", Self.publication(nil)) == .deliver)
        #expect(table.publication("c", Self.publication(nil)) == .deliver)
    }

    @Test("an entry made again after an unsubscribe has a new serial")
    func serials() {
        var table = SubscriptionTable()
        _ = table.add("c", since: nil)
        let first = table.entry("c")!.serial
        table.remove("c")
        _ = table.add("c", since: nil)
        #expect(table.entry("c")!.serial != first)
    }

    // MARK: what the client sends

    @Test("a command fits a limit exactly when its longest-id encoding does (the cheap bound is never below it)")
    func commandSizes() throws {
        let nasty = String(repeating: "\u{01}\"\\é", count: 50)
        let position = StreamPosition(offset: UInt64(Int64.max), epoch: nasty)
        let data = try RawJSON(validating: Array(#"{"a":[1,2,3],"b":"\u0001"}"#.utf8))
        let commands: [OutgoingCommand] = [
            .connect(token: nasty, name: nasty, subs: [("c", nil), (nasty, position)]),
            .connect(token: nil, name: "n", subs: []),
            .subscribe(channel: nasty, since: position, token: nasty),
            .subRefresh(channel: nasty, token: nasty),
            .unsubscribe(channel: nasty), .presence(channel: "p"), .presenceStats(channel: nasty),
            .publish(channel: nasty, data: data, idempotencyKey: nasty),
            .history(channel: nasty, since: position, limit: Int.max, reverse: true),
            .ping, .refresh(token: nasty),
        ]
        for command in commands {
            let size = command.encodedSize
            #expect(command.fits(size))
            #expect(!command.fits(size - 1), "\(command)")
        }
    }

    // MARK: what the node sends

    @Test("a frame of several objects: replies, errors, pushes, pings; data kept byte for byte")
    func decodeFrame() throws {
        let frame = [
            #"{"id":1,"result":{"client":"c1","node":"n1","ping":25,"pong":true}}"#,
            #"{"id":2,"error":{"code":107,"message":"bad channel","temporary":false}}"#,
            #"{"channel":"c","pub":{"offset":3,"data":{"a" : 1e400, "b":"\u00e9"},"info":{"client":"c9","user":"u"}}}"#,
            #"{"channel":"c","join":{"client":"c2","user":"u2"}}"#,
            #"{"channel":"c","unsubscribe":{"code":2500,"reason":"insufficient state"}}"#,
            #"{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}"#,
            "{}",
            #"{"something":"new"}"#,
        ].joined(separator: "\n")
        let messages = try ServerMessage.decode(frame: Array(frame.utf8))
        #expect(messages.count == 8)
        guard case .result(1, let connect) = messages[0] else { throw Failure("not a result: \(messages[0])") }
        #expect(ConnectResult(json: connect).pingInterval == 25 && ConnectResult(json: connect).pong)
        guard case .error(2, let error) = messages[1] else { throw Failure("not an error: \(messages[1])") }
        #expect(error.code.rawValue == 107 && error.message == "bad channel")
        guard case .publication("c", let publication) = messages[2] else { throw Failure("not a publication: \(messages[2])") }
        #expect(publication.offset == 3)
        #expect(publication.json == #"{"a" : 1e400, "b":"\u00e9"}"#)
        #expect(publication.info == ClientInfo(client: "c9", user: "u"))
        #expect(messages[3] == .join(channel: "c", ClientInfo(client: "c2", user: "u2")))
        #expect(messages[4] == .unsubscribed(channel: "c", code: 2500, reason: "insufficient state"))
        #expect(messages[5] == .disconnect(code: 3001, reason: "shutdown", reconnect: true))
        #expect(messages[6] == .ping)
        #expect(messages[7] == .unknown)
        #expect(throws: JSONParser.Error.self) { try ServerMessage.decode(frame: Array("{\"id\":".utf8)) }
    }

    @Test("publications inside history and connect results keep their data raw too")
    func decodeNestedData() throws {
        let frame = #"{"id":4,"result":{"subs":{"c":{"offset":2,"epoch":"e","recovered":true,"publications":[{"offset":2,"data":[1, 2.50]}]}}}}"#
        guard case .result(4, let result) = try ServerMessage.decode(frame: Array(frame.utf8))[0],
            let sub = result["subs"]?.objectValue?["c"]?.objectValue
        else { throw Failure("no subs") }
        let parsed = SubscribeResult(json: sub)
        #expect(parsed.publications.map(\.json) == ["[1, 2.50]"])
        #expect(parsed.position == StreamPosition(offset: 2, epoch: "e") && parsed.recovered == true)
        let history = #"{"id":5,"result":{"publications":[{"offset":1,"data":{ "x" : 1.0 }}],"offset":1,"epoch":"e"}}"#
        guard case .result(5, let page) = try ServerMessage.decode(frame: Array(history.utf8))[0] else { throw Failure("no result") }
        #expect(SubscribeResult(json: page).publications.map(\.json) == [#"{ "x" : 1.0 }"#])
    }

    // MARK: endpoints

    @Test(
        "URLs: ws and wss as given, http(s) bases get /ws, ports and IPv6",
        arguments: [
            ("ws://127.0.0.1:8000/ws", ClientEndpoint(host: "127.0.0.1", port: 8000, path: "/ws")),
            ("wss://rt.example.com/ws?x=1", ClientEndpoint(host: "rt.example.com", port: 443, path: "/ws?x=1", usesTLS: true)),
            ("http://node:9000", ClientEndpoint(host: "node", port: 9000, path: "/ws")),
            ("https://example.com/rt/", ClientEndpoint(host: "example.com", port: 443, path: "/rt/ws", usesTLS: true)),
            ("ws://[::1]:8000/ws", ClientEndpoint(host: "::1", port: 8000, path: "/ws")),
            ("WS://host", ClientEndpoint(host: "host", port: 80, path: "/")),
        ])
    func endpoints(url: String, expected: ClientEndpoint) {
        #expect(ClientEndpoint(url) == expected)
    }

    @Test("URLs that are not endpoints are refused", arguments: ["", "127.0.0.1:8000", "ftp://x/", "ws://", "ws://:80/", "ws://h:0/", "ws://h:70000/", "ws://u@h/", "ws://[::1/"])
    func badEndpoints(url: String) {
        #expect(ClientEndpoint(url) == nil)
    }

    @Test("the Host header keeps non-default ports and brackets IPv6")
    func hostHeader() {
        #expect(ClientEndpoint(host: "::1", port: 8000).hostHeader == "[::1]:8000")
        #expect(ClientEndpoint(host: "h", port: 443, usesTLS: true).hostHeader == "h")
    }
}

struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
