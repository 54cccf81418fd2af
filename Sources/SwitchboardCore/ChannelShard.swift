/// Which hub shard (and so which event loop) owns a channel: the one its name
/// hashes to.
///
/// The hub and the memory broker are split into one shard per event loop, and
/// both must agree on a channel's owner without asking anyone, on every loop,
/// in every process and after every restart. So the hash is FNV-1a (64 bit)
/// over the name's UTF-8 bytes, not Swift's `Hasher`, whose seed changes per
/// process.
public enum ChannelShard {
    /// FNV-1a, 64 bit, of the UTF-8 bytes of `channel`.
    public static func hash(_ channel: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in channel.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// The index, in `0..<count`, of the shard that owns `channel`; 0 when `count` is 1 or less.
    public static func index(of channel: String, count: Int) -> Int {
        guard count > 1 else { return 0 }
        return Int(Self.hash(channel) % UInt64(count))
    }
}
