/// Epochs for channels that have none stored yet.
///
/// A read of an unknown channel must not store anything, yet must report the epoch that the
/// channel's first publication will get (a hub that subscribed to an empty channel treats a
/// different epoch on the first publication as lost history). So the epoch of a channel without
/// stored meta is derived, not drawn: a hash of a per-store seed, the channel name and the
/// current period of `metaTTL` seconds. Two lives of a channel are at least `metaTTL` apart
/// (meta is forgotten that long after the last publication), so they fall in different periods
/// and get different epochs; a new seed (a restarted store) gives new epochs at once. A store that
/// forgets channels before `metaTTL` (the memory broker over its channel cap) passes a `generation`
/// it raises on each such pass, so a forgotten channel's next life gets a new epoch too.
enum StreamEpoch {
    private static let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)

    /// The epoch a channel without stored meta has at `now`.
    static func unborn(seed: UInt64, channel: String, now: Double, metaTTL: Double, generation: UInt64 = 0) -> String {
        var hasher = Hasher()
        hasher.combine(seed)
        hasher.combine(generation)
        hasher.combine(channel)
        hasher.combine(self.period(now: now, length: metaTTL))
        var value = UInt64(bitPattern: Int64(hasher.finalize()))
        var bytes = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 {
            bytes[i] = Self.alphabet[Int(value % 36)]
            value /= 36
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Which period of `length` seconds `now` falls in; never traps (non-finite or absurd inputs give 0).
    static func period(now: Double, length: Double) -> Int64 {
        guard length.isFinite, length >= 1 else { return 0 }
        let quotient = (now / length).rounded(.down)
        guard quotient.isFinite, abs(quotient) < 9.0e18 else { return 0 }
        return Int64(quotient)
    }
}
