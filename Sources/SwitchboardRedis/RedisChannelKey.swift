import RESP

/// The name of one of a channel's keys (or its pub/sub channel): a prefix, the channel, a suffix.
///
/// Kept as parts so that the publish path writes a key into its command without making a `String`
/// of it first (four keys per publication); `callAsFunction` makes the `String` elsewhere.
struct RedisChannelKey: Sendable {
    let prefix: StaticString
    let suffix: StaticString

    func callAsFunction(_ channel: String) -> String {
        "\(self.prefix)\(channel)\(self.suffix)"
    }
}

extension RESPArgumentList {
    /// Adds `key` of `channel` as one argument.
    mutating func append(_ key: RedisChannelKey, _ channel: String) {
        self.append(key.prefix, channel, key.suffix)
    }
}
