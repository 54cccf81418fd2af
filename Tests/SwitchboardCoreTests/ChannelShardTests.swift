import SwitchboardCore
import Testing

@Suite("ChannelShard")
struct ChannelShardTests {
    @Test("the hash is FNV-1a 64 over UTF-8: known vectors, the same in every process")
    func knownVectors() {
        // Reference values of FNV-1a 64 (http://www.isthe.com/chongo/tech/comp/fnv/).
        #expect(ChannelShard.hash("") == 0xcbf2_9ce4_8422_2325)
        #expect(ChannelShard.hash("a") == 0xaf63_dc4c_8601_ec8c)
        #expect(ChannelShard.hash("foobar") == 0x8594_4171_f739_67e8)
    }

    @Test("a name maps to one shard in range; one shard or fewer is shard 0", arguments: [1, 2, 3, 4, 8, 64])
    func inRangeAndStable(count: Int) {
        for i in 0..<500 {
            let name = "chat:room-\(i)"
            let shard = ChannelShard.index(of: name, count: count)
            #expect((0..<count).contains(shard))
            #expect(ChannelShard.index(of: name, count: count) == shard)
            #expect(shard == Int(ChannelShard.hash(name) % UInt64(count)))
        }
        #expect(ChannelShard.index(of: "x", count: 0) == 0)
        #expect(ChannelShard.index(of: "x", count: -3) == 0)
    }

    @Test("channels spread over every shard, none holding far more than its share")
    func spread() {
        let count = 4
        var perShard = [Int](repeating: 0, count: count)
        for i in 0..<4_000 { perShard[ChannelShard.index(of: "ns:channel-\(i)", count: count)] += 1 }
        #expect(perShard.allSatisfy { $0 > 800 && $0 < 1_200 })
    }

    @Test("names differing in one byte, or only in non-ASCII characters, are told apart")
    func bytesNotCharacters() {
        #expect(ChannelShard.hash("chat:é") != ChannelShard.hash("chat:e\u{301}"))
        #expect(ChannelShard.hash("chat:a") != ChannelShard.hash("chat:b"))
    }
}
