/// Replies in command order.
///
/// A command reserves a slot when it starts; its reply may complete later
/// (a broker round trip) and out of order, but goes out only when every
/// earlier command's reply has. A plain value; an idle session keeps no
/// storage here.
struct ReplyQueue<Reply> {
    private var slots: [Reply?] = []
    private var head = 0
    private var firstSequence: UInt64 = 0
    private var nextSequence: UInt64 = 0

    /// No reply is outstanding.
    var isEmpty: Bool { self.head == self.slots.count }

    /// Takes the next slot in command order.
    mutating func reserve() -> UInt64 {
        let sequence = self.nextSequence
        self.nextSequence += 1
        self.slots.append(nil)
        return sequence
    }

    /// Fills a slot; returns false (and keeps nothing) for a slot released by `removeAll`, or filled already.
    @discardableResult
    mutating func fill(_ sequence: UInt64, _ reply: Reply) -> Bool {
        guard sequence >= self.firstSequence else { return false }
        let offset = sequence - self.firstSequence
        guard offset < UInt64(self.slots.count - self.head) else { return false }
        let index = self.head + Int(offset)
        guard self.slots[index] == nil else { return false }
        self.slots[index] = reply
        return true
    }

    /// The next reply whose turn it is, if it is filled.
    mutating func popReady() -> Reply? {
        guard self.head < self.slots.count, let reply = self.slots[self.head] else { return nil }
        self.slots[self.head] = nil
        self.head += 1
        self.firstSequence += 1
        if self.head == self.slots.count {
            self.slots = []
            self.head = 0
        } else if self.head >= 64, self.head * 2 >= self.slots.count {
            self.slots.removeFirst(self.head)
            self.head = 0
        }
        return reply
    }

    /// Forgets every reply (the session ended); later fills are ignored.
    mutating func removeAll() {
        self.firstSequence = self.nextSequence
        self.slots = []
        self.head = 0
    }
}
