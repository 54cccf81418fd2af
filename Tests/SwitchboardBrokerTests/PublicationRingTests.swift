import NIOCore
@testable import SwitchboardBroker
import SwitchboardCore
import Testing

@Suite("PublicationRing")
struct PublicationRingTests {
    private func publication(_ offset: UInt64) -> Publication {
        Publication(offset: offset, data: ByteBuffer(string: "\(offset)"))
    }

    private func offsets(_ ring: PublicationRing) -> [UInt64] {
        (0..<ring.count).map { ring[$0].offset }
    }

    @Test("entries stay in order and keep their expiry through wrap-around and growth")
    func wrapAndGrow() {
        var ring = PublicationRing()
        // Fill 8 slots, drop 5, append 6 more: the ring wraps (head at slot 5), then grows while wrapped.
        for offset in UInt64(1)...8 { ring.append(self.publication(offset), expiresAt: Double(offset)) }
        #expect(ring.capacity == 8)
        ring.removeFirst(5)
        for offset in UInt64(9)...14 { ring.append(self.publication(offset), expiresAt: Double(offset)) }
        #expect(ring.capacity == 16)
        #expect(self.offsets(ring) == Array(UInt64(6)...14))
        #expect(ring.firstOffset == 6)
        // Each entry's expiry moved with it: at time 9.5 exactly 6, 7, 8 and 9 are gone.
        ring.dropExpired(now: 9.5)
        #expect(self.offsets(ring) == Array(UInt64(10)...14))
        // An expiry equal to now counts as expired; nothing else moves.
        ring.dropExpired(now: 10)
        #expect(self.offsets(ring) == Array(UInt64(11)...14))
        ring.dropExpired(now: 10.5)
        #expect(self.offsets(ring) == Array(UInt64(11)...14))
    }

    @Test("a wrapped ring expires across its end, and an emptied large ring gives its storage back")
    func expiryAcrossTheEnd() {
        var ring = PublicationRing()
        for offset in UInt64(1)...32 { ring.append(self.publication(offset), expiresAt: Double(offset)) }
        #expect(ring.capacity == 32)
        ring.removeFirst(30)  // head at slot 30
        for offset in UInt64(33)...40 { ring.append(self.publication(offset), expiresAt: Double(offset)) }  // slots 0...7
        #expect(ring.capacity == 32)
        ring.dropExpired(now: 35)
        #expect(self.offsets(ring) == Array(UInt64(36)...40))
        ring.dropExpired(now: 1_000)
        #expect(ring.isEmpty)
        #expect(ring.firstOffset == nil)
        #expect(ring.capacity == 0)
    }

    @Test("any emptied ring gives its storage back, and its bytes count each entry's overhead")
    func smallRingGivesStorageBack() {
        var ring = PublicationRing()
        for offset in UInt64(1)...3 { ring.append(self.publication(offset), expiresAt: Double(offset)) }
        #expect(ring.capacity == 8)
        #expect(ring.bytes == 3 * (1 + PublicationRing.entryOverhead))
        ring.removeFirst(1)
        #expect(ring.bytes == 2 * (1 + PublicationRing.entryOverhead))
        ring.dropExpired(now: 100)
        #expect(ring.isEmpty && ring.bytes == 0)
        #expect(ring.capacity == 0, "a record outlives its history by a day: its slots must not")
    }

    @Test("a slot keeps data, info and time, not a whole publication, and gives them back with their offsets")
    func slotsAreSmallAndLoseNothing() throws {
        #expect(PublicationRing.slotStride <= 40, "a slot takes \(PublicationRing.slotStride) bytes")
        var ring = PublicationRing()
        let ann = ClientInfo(client: "c-ann-0123456789abcdef", user: "ann", info: .object(JSONObject([("name", .string("Ann"))])))
        let bob = ClientInfo(client: "c-bob-0123456789abcdef", user: "bob")
        let annAgain = ClientInfo(client: "c-ann-0123456789abcdef", user: "ann", info: .object(JSONObject([("name", .string("Ann B"))])))
        let infos: [ClientInfo?] = [ann, ann, nil, bob, ann, ann, annAgain, annAgain, nil, nil]
        for (i, info) in infos.enumerated() {
            let offset = UInt64(41 + i)
            ring.append(Publication(offset: offset, data: ByteBuffer(string: "p\(offset)"), info: info, time: offset * 1_000), expiresAt: 100)
        }
        #expect(ring.firstOffset == 41)
        for (i, info) in infos.enumerated() {
            let offset = UInt64(41 + i)
            #expect(ring[i] == Publication(offset: offset, data: ByteBuffer(string: "p\(offset)"), info: info, time: offset * 1_000))
        }
        // Consecutive entries of one client hold one info; a different client, a gap or changed info do not.
        #expect(ring.infoIdentity(0) != nil && ring.infoIdentity(0) == ring.infoIdentity(1))
        #expect(ring.infoIdentity(2) == nil)
        #expect(ring.infoIdentity(4) != ring.infoIdentity(1), "no entry between them shares: a new one after nil and bob")
        #expect(ring.infoIdentity(4) == ring.infoIdentity(5))
        #expect(ring.infoIdentity(6) != ring.infoIdentity(5), "the same client id with other info is not shared")
        #expect(ring.infoIdentity(6) == ring.infoIdentity(7))
    }

    @Test("offsets follow the oldest entry through removal, expiry and emptying, and a refilled ring starts where it is told")
    func offsetsFollowTheOldest() {
        var ring = PublicationRing()
        for offset in UInt64(7)...12 { ring.append(self.publication(offset), expiresAt: Double(offset)) }
        ring.removeFirst(2)
        #expect(ring.firstOffset == 9)
        #expect(self.offsets(ring) == Array(UInt64(9)...12))
        ring.dropExpired(now: 10)
        #expect(self.offsets(ring) == [11, 12])
        #expect(ring[1].data == ByteBuffer(string: "12"))
        ring.removeFirst(5)
        #expect(ring.isEmpty && ring.firstOffset == nil)
        for offset in UInt64(500)...502 { ring.append(self.publication(offset), expiresAt: 1_000) }
        #expect(self.offsets(ring) == [500, 501, 502])
        #expect(ring[0].data == ByteBuffer(string: "500"))
    }
}

@Suite("IdempotencyTable")
struct IdempotencyTableTests {
    @Test("keys are forgotten after their window, and the table then gives its storage back")
    func storageGivenBack() {
        var table = IdempotencyTable()
        for i in 0..<100 {
            table.remember("key-\(i)", position: StreamPosition(offset: UInt64(i + 1), epoch: "e"), expiresAt: 10, now: 0, capacity: 10_000)
        }
        #expect(table.count == 100)
        #expect(table.lookup("key-7", now: 5) == StreamPosition(offset: 8, epoch: "e"))
        table.dropExpired(now: 10)
        #expect(table.isEmpty && table.lookup("key-7", now: 10) == nil)
        #expect(table.storageCapacity > 1, "kept on the publish path (no free and allocate per keyed publish)")
        table.dropExpired(now: 10, releasingStorage: true)  // the broker's sweep
        #expect(table.storageCapacity <= 1, "a record outlives its keys by a day: their storage must not")
    }
}
