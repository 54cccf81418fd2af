/// The recovering history reads of one session that may be at the broker at once.
///
/// A subscription that recovers (`subscribe` with `since`, each of a `connect`'s or a poll's `subs`
/// with a position) reads what it missed, up to its reply's room: half the outbound limit on a
/// WebSocket, the HTTP answer's room on a poll. Issued all at once, one request naming 128 channels
/// had 128 such reads in memory together (64 MiB on a WebSocket, 128 MiB on a poll) before the
/// address's history budget, charged as each read completes, could say no. Through this window at
/// most `width` are in flight per session; the rest wait in order and go as earlier ones end, each
/// then checked against the budget and bounded by the room its reply still has.
///
/// Plain value: the session asks it what to do and does it (`admit`, then `finished` for every
/// admitted element however its read ends: answered, refused, or its subscription gone).
struct RecoveryReadWindow<Element: Identifiable> {
    /// Reads in flight per session at most: a few, so that a reconnect recovering many channels
    /// is not one broker round trip per channel in a row.
    static var width: Int { 4 }

    enum Admission: Equatable {
        /// Issue the read now.
        case issue
        /// Hold it: `finished` hands it back when its turn comes.
        case wait
    }

    /// Ids of the reads in flight (at most `width`: a small array, no hashing).
    private var inFlight: [Element.ID] = []
    /// Reads waiting for a place, oldest first; at most one per subscription of the session.
    private var waiting: [Element] = []

    init() {}

    var inFlightCount: Int { self.inFlight.count }

    /// Whether `id`'s read was issued and has not ended.
    func isInFlight(_ id: Element.ID) -> Bool { self.inFlight.contains(id) }
    var waitingCount: Int { self.waiting.count }

    /// A read to make: issued now when the window has room, else held in order.
    mutating func admit(_ element: Element) -> Admission {
        if self.inFlight.count < Self.width {
            self.inFlight.append(element.id)
            return .issue
        }
        self.waiting.append(element)
        return .wait
    }

    /// The read of `id` ended, or its subscription did while it waited: the oldest waiting read
    /// takes its place and is returned, to be issued (nil when none waits or the place was not
    /// taken). Unknown ids (a subscription that read no history) change nothing.
    mutating func finished(_ id: Element.ID) -> Element? {
        if let index = self.waiting.firstIndex(where: { $0.id == id }) {
            self.waiting.remove(at: index)
            return nil
        }
        guard let index = self.inFlight.firstIndex(of: id) else { return nil }
        self.inFlight.remove(at: index)
        guard !self.waiting.isEmpty else { return nil }
        let next = self.waiting.removeFirst()
        self.inFlight.append(next.id)
        return next
    }
}
