/// The (S)SUBSCRIBE and (S)UNSUBSCRIBE commands sent on a subscriber connection and not yet
/// answered, oldest first. Redis answers a connection's commands in order, and an error reply names
/// no channel: this is how one is matched to the command it answers. A plain value, tested without
/// a server.
///
/// A confirmation (`subscribe`/`unsubscribe` push) answers one channel of a command; an error
/// answers a whole command. Unasked pushes (a cluster node dropping a shard channel whose slot moved)
/// are not answers and are not given here.
struct RedisSentCommands: Equatable {
    enum Command: Equatable {
        /// SUBSCRIBE or SSUBSCRIBE of one channel.
        case subscribe(String)
        /// One SUBSCRIBE of several channels: Redis refuses it whole (an ACL that denies one of them).
        case batch(Set<String>)
        /// UNSUBSCRIBE or SUNSUBSCRIBE of one channel.
        case unsubscribe(String)
    }

    /// What an error reply answered.
    enum Answered: Equatable {
        /// The one-channel SUBSCRIBE of this channel.
        case subscribe(String)
        /// A SUBSCRIBE of several channels, or an UNSUBSCRIBE: only starting over on a new
        /// connection puts what Redis holds and what is wanted back in step.
        case unknown
        /// Nothing sent is unanswered (an error of the server's own).
        case nothing
    }

    private(set) var unanswered: [Command] = []

    mutating func sent(_ command: Command) {
        if case .batch(let names) = command, names.isEmpty { return }
        self.unanswered.append(command)
    }

    /// Redis confirmed a SUBSCRIBE of `name`: the oldest command it answers.
    mutating func subscribeConfirmed(_ name: String) {
        for (index, command) in self.unanswered.enumerated() {
            switch command {
            case .subscribe(name):
                self.unanswered.remove(at: index)
                return
            case .batch(var names) where names.contains(name):
                names.remove(name)
                if names.isEmpty { self.unanswered.remove(at: index) } else { self.unanswered[index] = .batch(names) }
                return
            default:
                continue
            }
        }
    }

    /// Redis confirmed an UNSUBSCRIBE of `name` that we sent.
    mutating func unsubscribeConfirmed(_ name: String) {
        if let index = self.unanswered.firstIndex(of: .unsubscribe(name)) { self.unanswered.remove(at: index) }
    }

    /// An error reply: the command it answers. A redirection (`MOVED`) names its slot: it answers
    /// the oldest command of a channel in that slot (`slotOf` gives a channel's slot).
    mutating func refused(redirectedSlot: UInt16?, slotOf: (String) -> UInt16) -> Answered {
        if let slot = redirectedSlot {
            guard
                let index = self.unanswered.firstIndex(where: { command in
                    switch command {
                    case .subscribe(let name), .unsubscribe(let name): slotOf(name) == slot
                    case .batch: false
                    }
                })
            else { return .nothing }
            let command = self.unanswered.remove(at: index)
            if case .subscribe(let name) = command { return .subscribe(name) }
            return .unknown
        }
        guard !self.unanswered.isEmpty else { return .nothing }
        if case .subscribe(let name) = self.unanswered.removeFirst() { return .subscribe(name) }
        return .unknown
    }

    /// The connection is gone: nothing sent on it will be answered.
    mutating func removeAll() {
        self.unanswered.removeAll()
    }
}
