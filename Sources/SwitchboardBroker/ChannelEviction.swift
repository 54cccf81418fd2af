/// Picks the channel records to forget when the memory broker's table is full: the ones published to
/// longest ago. A client allowed to publish to channels of its choosing creates one record per new
/// name, and a record's epoch and offset are kept for `metaTTL` (a day) after its last publication, so
/// without a cap the table grows with every name sent.
enum ChannelEviction {
    /// The names of the `count` records of `records` with the oldest `lastPublish` (ties in any order).
    ///
    /// Linear in `records` plus the sort of one bucket: the times are counted into 64 buckets between
    /// the oldest and the newest, whole buckets are taken from the oldest on, and only the bucket that
    /// crosses `count` is sorted. (Sorting a full table of a million records would hold the loop for a
    /// good part of a second.)
    static func oldest(_ count: Int, of records: [(name: String, lastPublish: Double)]) -> [String] {
        guard count > 0 else { return [] }
        guard count < records.count else { return records.map(\.name) }
        var low = Double.infinity
        var high = -Double.infinity
        for record in records {
            low = min(low, record.lastPublish)
            high = max(high, record.lastPublish)
        }
        let bucketCount = 64
        let width = (high - low) / Double(bucketCount)
        func bucket(_ time: Double) -> Int {
            guard width > 0, width.isFinite else { return 0 }
            let position = (time - low) / width
            guard position.isFinite else { return 0 }
            return min(bucketCount - 1, max(0, Int(position.rounded(.down))))
        }
        var sizes = [Int](repeating: 0, count: bucketCount)
        for record in records { sizes[bucket(record.lastPublish)] += 1 }
        var whole = 0
        var taken = 0
        while whole < bucketCount && taken + sizes[whole] <= count {
            taken += sizes[whole]
            whole += 1
        }
        var names: [String] = []
        names.reserveCapacity(count)
        var crossing: [(name: String, lastPublish: Double)] = []
        for record in records {
            let index = bucket(record.lastPublish)
            if index < whole {
                names.append(record.name)
            } else if index == whole {
                crossing.append(record)
            }
        }
        crossing.sort { $0.lastPublish < $1.lastPublish }
        names.append(contentsOf: crossing.prefix(count - taken).map(\.name))
        return names
    }
}
