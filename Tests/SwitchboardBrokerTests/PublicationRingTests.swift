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
}
