/// A session's subscriptions by channel. Most sessions hold one or a few, so
/// up to `inlineLimit` live in a small array (an idle connection's memory is
/// a goal with a number; a one-entry dictionary costs ~3x a one-entry array);
/// past that a dictionary keeps lookups constant. Keyed by each
/// subscription's own channel.
struct SessionSubscriptions {
    static let inlineLimit = 8

    private var few: [SessionSubscription] = []
    private var many: [String: SessionSubscription]?

    var count: Int { self.many?.count ?? self.few.count }

    var values: [SessionSubscription] { self.many.map { Array($0.values) } ?? self.few }

    subscript(channel: String) -> SessionSubscription? {
        get {
            if let many = self.many { return many[channel] }
            return self.few.first { $0.channel == channel }
        }
        set {
            assert(newValue.map { $0.channel == channel } ?? true, "keyed by the subscription's own channel")
            if self.many != nil {
                self.many![channel] = newValue
                return
            }
            if let index = self.few.firstIndex(where: { $0.channel == channel }) {
                if let newValue { self.few[index] = newValue } else { self.few.remove(at: index) }
            } else if let newValue {
                if self.few.count < Self.inlineLimit {
                    self.few.append(newValue)
                } else {
                    var many = Dictionary(uniqueKeysWithValues: self.few.map { ($0.channel, $0) })
                    many[channel] = newValue
                    self.many = many
                    self.few = []
                }
            }
        }
    }

    @discardableResult
    mutating func removeValue(forKey channel: String) -> SessionSubscription? {
        let existing = self[channel]
        if existing != nil { self[channel] = nil }
        return existing
    }

    mutating func removeAll() {
        self.few = []
        self.many = nil
    }
}
