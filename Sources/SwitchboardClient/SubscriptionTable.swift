import NIOCore
import SwitchboardCore

/// The client's subscriptions: for each channel, whether the node has it and the position of the
/// last publication delivered. A plain value: the driver feeds it what the node sends and does
/// what it answers, and the rules (each publication once, in order; recovery from the last
/// position) are tested without a socket.
struct SubscriptionTable {
    enum Phase: Equatable {
        /// To be sent once connected.
        case waiting
        /// Sent (in `connect.subs` or as `subscribe`), no answer yet.
        case subscribing
        /// The node has it: pushes are delivered.
        case live
    }

    struct Entry: Equatable {
        /// Tells this entry from an earlier one for the same channel (unsubscribed since): an
        /// answer to the earlier one's subscribe is not this one's.
        var serial: UInt64
        var phase: Phase = .waiting
        /// Whether a subscription token is sent with each subscribe: such a channel is not in a
        /// `connect` (whose `subs` carry no tokens), it is subscribed once the connection is up.
        var usesToken = false
        /// The last publication delivered (or the position the subscription started from).
        var position: StreamPosition?
        /// Temporary refusals, and subscribes given up at their deadline, in a row (the delay before
        /// the next subscribe grows with them). Cleared when the subscribe settles, or a live
        /// publication is delivered.
        var retries = 0
        /// `unsubscribe` pushes in a row that made it subscribe again (2500, 2501) with no live
        /// publication delivered since: the first subscribes again at once, the next ones after a
        /// growing delay. A subscribe answer does not clear it: a node that cannot settle the channel
        /// takes each subscribe and loses the channel again at once (each round a history read), so
        /// only a live publication shows the subscription works.
        var removals = 0
        /// When the last of those removals came: one more than `removalMemory` later counts as the
        /// first again (a quiet channel removed now and then by a node's broker blips is not kept
        /// waiting for good).
        var lastRemoval: NIODeadline?
        /// The id of the `subscribe` sent for it on this connection whose answer is awaited (nil: none
        /// in flight, or it went in the `connect`, which has its own deadline). Only that command's
        /// answer counts: one given up at its deadline is ignored when it comes late.
        var awaiting: UInt64?
        /// The position a hole was last seen after (and the subscription made again from): the
        /// same hole seen again from there is not in the node's history any more.
        var holeAfter: StreamPosition?
    }

    /// What to do with a publication push.
    enum PublicationDecision: Equatable {
        /// Deliver it (the position moved to its offset).
        case deliver
        /// Already delivered (a recovery list and the live stream overlap): drop it.
        case duplicate
        /// Not live (being subscribed or unknown): the subscribe answer brings what matters.
        case ignore
        /// Past a hole (its offset skips ahead of the position): not delivered; the subscription
        /// is made again from `since` (the channel is `subscribing` until the answer), whose
        /// recovery brings what the hole held and this one, in order.
        case resubscribe(since: StreamPosition)
        /// Past the hole it was made again for, seen again: what the hole held is lost. Deliver
        /// `.unrecovered(position:)` (the position before this one), then this one.
        case deliverAfterLoss(StreamPosition)
    }

    /// What to do after an `unsubscribe` push.
    enum UnsubscribeDecision: Equatable {
        /// Subscribe again from `since`, now (code 2500 and up: the node lost track, recover).
        case resubscribe(since: StreamPosition?, serial: UInt64)
        /// Subscribe again from the position after `ClientDriver.retryDelay(retries:)` (the channel is
        /// `subscribing` meanwhile): the node removed it again with no live publication delivered
        /// since the last time, and is not asked in a loop.
        case resubscribeLater(retries: Int)
        /// The subscription is over (the backend removed it: do not subscribe again).
        case ended
        /// Not a channel of ours.
        case ignore
    }

    /// What to do when a `subscribe`'s answer did not come in time.
    enum SubscribeDeadlineDecision: Equatable {
        /// Give it up (its answer is ignored if it comes): `unsubscribe` now (the node may hold the
        /// subscription, or still be making it) and subscribe again from the position after
        /// `ClientDriver.retryDelay(retries:)`. The channel stays `subscribing` meanwhile.
        case retry(retries: Int)
        /// Answered already, or not the subscribe awaited: nothing to do.
        case ignore
    }

    private(set) var entries: [String: Entry] = [:]
    private var nextSerial: UInt64 = 0

    /// Most channels a client follows; the node's own limit (`maxSubscriptions`) is usually lower.
    static let maximumChannels = 10_000

    var channels: Dictionary<String, Entry>.Keys { self.entries.keys }

    func entry(_ channel: String) -> Entry? { self.entries[channel] }

    /// Follows `channel` from `since` (nil: from now). False when it is already followed or the
    /// table is full.
    mutating func add(_ channel: String, since: StreamPosition?, usesToken: Bool = false) -> Bool {
        guard self.entries[channel] == nil, self.entries.count < Self.maximumChannels else { return false }
        self.nextSerial += 1
        self.entries[channel] = Entry(serial: self.nextSerial, phase: .waiting, usesToken: usesToken, position: since)
        return true
    }

    /// Stops following `channel`; whether it was followed.
    @discardableResult
    mutating func remove(_ channel: String) -> Bool {
        self.entries.removeValue(forKey: channel) != nil
    }

    /// A connection opens: every channel without a token goes in its `connect`, with its position to
    /// recover from (the others wait for the connect reply).
    mutating func startConnect() -> [(channel: String, since: StreamPosition?)] {
        var subs: [(channel: String, since: StreamPosition?)] = []
        for (channel, entry) in self.entries where !entry.usesToken {
            self.entries[channel]!.phase = .subscribing
            self.entries[channel]!.awaiting = nil
            subs.append((channel, entry.position))
        }
        return subs.sorted { $0.channel < $1.channel }
    }

    /// One more temporary refusal of `channel` in a row: how many now.
    mutating func countRetry(_ channel: String) -> Int {
        guard self.entries[channel] != nil else { return 0 }
        self.entries[channel]!.retries += 1
        return self.entries[channel]!.retries
    }

    /// The node answered for `channel` (a poll's position, a publication): no refusal in a row now.
    mutating func clearRetries(_ channel: String) {
        if self.entries[channel]?.retries != 0 { self.entries[channel]?.retries = 0 }
    }

    /// A channel is to be subscribed on a connection that is up: its `since`.
    mutating func startSubscribe(_ channel: String) -> StreamPosition?? {
        guard let entry = self.entries[channel] else { return .none }
        self.entries[channel]!.phase = .subscribing
        self.entries[channel]!.awaiting = nil
        return .some(entry.position)
    }

    /// The `subscribe` of `channel` went out as command `id`: its answer is awaited (until the
    /// driver's deadline).
    mutating func subscribeSent(_ channel: String, id: UInt64) {
        guard self.entries[channel]?.phase == .subscribing else { return }
        self.entries[channel]!.awaiting = id
    }

    /// An answer to command `id`, a `subscribe` of `channel`: whether it is the one awaited (then it
    /// is awaited no more). A late answer to a subscribe given up at its deadline is not: ignored,
    /// it neither subscribes twice nor delivers twice.
    mutating func subscribeAnswered(_ channel: String, id: UInt64) -> Bool {
        guard let entry = self.entries[channel], entry.phase == .subscribing, entry.awaiting == id else { return false }
        self.entries[channel]!.awaiting = nil
        return true
    }

    /// No answer to command `id`, a `subscribe` of `channel`, by its deadline: given up, and tried
    /// again like a temporary refusal (counted with them, so a node that keeps losing the answers
    /// is asked less and less often).
    mutating func subscribeTimedOut(_ channel: String, id: UInt64) -> SubscribeDeadlineDecision {
        guard let entry = self.entries[channel], entry.phase == .subscribing, entry.awaiting == id else { return .ignore }
        self.entries[channel]!.awaiting = nil
        return .retry(retries: self.countRetry(channel))
    }

    /// `channel` waits (keeping its position) until it is subscribed again: over long-polling,
    /// a channel the node refused for now is left out of the polls for a while.
    mutating func pause(_ channel: String) {
        self.entries[channel]?.phase = .waiting
        self.entries[channel]?.awaiting = nil
    }

    /// The connection ended: every channel waits for the next one, keeping its position.
    mutating func connectionLost() {
        for channel in self.entries.keys {
            self.entries[channel]!.phase = .waiting
            self.entries[channel]!.awaiting = nil  // command ids start over on the next connection
        }
    }

    /// The node took `channel`: the events for the subscriber, recovered publications included
    /// (each once, after the position).
    ///
    /// `settled`: false for a long-poll channel taken as subscribed when the poll goes out (the
    /// node has not answered yet): its count of temporary refusals stays.
    mutating func subscribed(_ channel: String, _ result: SubscribeResult, settled: Bool = true) -> [SubscriptionEvent] {
        guard var entry = self.entries[channel], entry.phase == .subscribing else { return [] }
        var events: [SubscriptionEvent] = []
        let recovered: Bool?
        if entry.position != nil {
            // Asked to recover: an answer without `recovered` (the namespace keeps no history now)
            // did not, and says so rather than moving on silently.
            let wasRecovered = result.recovered ?? false
            // A list with a hole, or one that stops short of the node's position (the node never
            // sends either: "never a partial list"), is taken as not recovered rather than
            // delivered through.
            let whole = wasRecovered && !Self.hasHole(result.publications, after: entry.position, upTo: result.position)
            recovered = whole
            if whole {
                for publication in result.publications {
                    if let offset = publication.offset, let position = entry.position {
                        guard offset > position.offset else { continue }
                        entry.position = StreamPosition(offset: offset, epoch: position.epoch)
                    }
                    events.append(.publication(publication))
                }
                if let now = result.position, let position = entry.position, now.epoch == position.epoch, now.offset > position.offset {
                    entry.position = now  // (not reached: `hasHole` says so)
                }
            } else {
                entry.position = result.position
                events.append(.unrecovered(position: result.position))
            }
        } else {
            recovered = nil
            entry.position = result.position
        }
        entry.phase = .live
        if settled { entry.retries = 0 }
        self.entries[channel] = entry
        events.insert(.subscribed(position: entry.position, recovered: recovered), at: 0)
        return events
    }

    /// Whether `publications` (oldest first) skip an offset after `position`, or end before
    /// `top` (in the same epoch): what a recovery must not have.
    static func hasHole(_ publications: [ClientPublication], after position: StreamPosition?, upTo top: StreamPosition?) -> Bool {
        guard let position else { return false }
        var last = position.offset
        for publication in publications {
            guard let offset = publication.offset, offset > last else { continue }
            if offset != last &+ 1 { return true }
            last = offset
        }
        if let top, top.epoch == position.epoch, top.offset > last { return true }
        return false
    }

    /// A long-poll said a live channel's position can no longer be recovered (its epoch changed, or
    /// the history moved past it): what was missed is lost; the subscription goes on from `position`.
    mutating func unrecovered(_ channel: String, position: StreamPosition?) -> [SubscriptionEvent] {
        guard let entry = self.entries[channel], entry.phase == .live else { return [] }
        self.entries[channel]!.position = position
        return [.unrecovered(position: position)]
    }

    /// A publication push for `channel`: delivered once, in order, never past a hole. The node
    /// does not let holes through (it refills them from history first); this is defence in depth.
    mutating func publication(_ channel: String, _ publication: ClientPublication) -> PublicationDecision {
        guard let entry = self.entries[channel], entry.phase == .live else { return .ignore }
        guard let offset = publication.offset else { return .deliver }
        guard let position = entry.position else { return .deliver }
        guard offset > position.offset else { return .duplicate }
        if offset > position.offset &+ 1 {
            guard entry.holeAfter == position else {
                self.entries[channel]!.holeAfter = position
                self.entries[channel]!.phase = .subscribing
                return .resubscribe(since: position)
            }
            // The hole again, from where it was asked for: the node's history no longer holds it.
            self.entries[channel]!.holeAfter = nil
            self.entries[channel]!.position = StreamPosition(offset: offset, epoch: position.epoch)
            self.entries[channel]!.retries = 0
            self.entries[channel]!.removals = 0
            return .deliverAfterLoss(StreamPosition(offset: offset &- 1, epoch: position.epoch))
        }
        self.entries[channel]!.position = StreamPosition(offset: offset, epoch: position.epoch)
        self.entries[channel]!.retries = 0
        self.entries[channel]!.removals = 0
        return .deliver
    }

    /// How long a removal (2500) is remembered when counting removals in a row: a node that cannot
    /// settle a channel removes it again within seconds; removals further apart are each a first.
    static let removalMemory = TimeAmount.seconds(60)

    /// The node removed `channel` with `code`: 2500 (insufficient state) subscribes again from the
    /// position, and so does 2501 (subscription token expired) for a channel with a token source;
    /// any other code ends the subscription. The first removal subscribes again at once; removals in
    /// a row with no live publication delivered in between back off as temporary refusals do.
    mutating func unsubscribed(_ channel: String, code: Int, now: NIODeadline = .now()) -> UnsubscribeDecision {
        guard let entry = self.entries[channel] else { return .ignore }
        if code == 2500 || (code == 2501 && entry.usesToken) {
            // Being made already (after a hole: the push is for the subscription it replaces): the
            // subscribe in flight brings the recovery; a second would be refused (105) and end it.
            guard entry.phase != .subscribing else { return .ignore }
            self.entries[channel]!.phase = .subscribing
            self.entries[channel]!.awaiting = nil
            let recent = entry.lastRemoval.map { now - $0 <= Self.removalMemory } ?? false
            let removals = (recent ? min(entry.removals, 1_000) : 0) + 1  // (the delay stops growing long before)
            self.entries[channel]!.removals = removals
            self.entries[channel]!.lastRemoval = now
            if removals > 1 { return .resubscribeLater(retries: removals - 1) }
            return .resubscribe(since: entry.position, serial: entry.serial)
        }
        self.entries.removeValue(forKey: channel)
        return .ended
    }
}
