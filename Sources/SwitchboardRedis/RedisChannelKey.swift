import RESP

/// The name of one of a channel's keys (or its pub/sub channel): a prefix, the channel, a suffix.
///
/// Kept as parts so that the publish path writes a key into its command without making a `String`
/// of it first (four keys per publication); `callAsFunction` makes the `String` elsewhere.
///
/// Keys whose prefix ends in `{` hash by the channel (a Redis Cluster hash tag), so all keys of a
/// channel share one slot. A channel that starts with `}` would leave that tag empty (and its keys
/// in different slots): its keys get a `\u{1}` before the channel, which no channel name contains
/// (control characters are refused), so the tag is that character and no two channels' keys meet.
struct RedisChannelKey: Sendable {
    let prefix: StaticString
    let suffix: StaticString

    func callAsFunction(_ channel: String) -> String {
        "\(self.prefix)\(Self.tagged(channel, after: self.prefix))\(self.suffix)"
    }

    /// The channel as it stands after `prefix` in a key.
    static func tagged(_ channel: String, after prefix: StaticString) -> String {
        guard channel.utf8.first == UInt8(ascii: "}"),
            prefix.utf8CodeUnitCount > 0, prefix.utf8Start[prefix.utf8CodeUnitCount - 1] == UInt8(ascii: "{")
        else { return channel }
        return "\u{1}" + channel
    }
}

extension RESPArgumentList {
    /// Adds `key` of `channel` as one argument.
    mutating func append(_ key: RedisChannelKey, _ channel: String) {
        self.append(key.prefix, RedisChannelKey.tagged(channel, after: key.prefix), key.suffix)
    }
}
