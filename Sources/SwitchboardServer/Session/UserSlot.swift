/// One connection's place under `limits.connectionsPerUser`, from `connect` to its end.
///
/// A counted connection takes a slot on this node (`UserConnectionCounts`, synchronous) and then
/// one in the broker (`Broker.acquireUserConnection`, cluster-wide with Redis, asynchronous). This
/// value says what the session holds at each moment, so that whatever it holds is given back
/// exactly once, however the connection ends: refused, closed, drained, failed, or closed while
/// the broker's answer is still on its way (the broker's slot is then given back when the answer
/// says it was taken).
///
/// When the broker cannot answer (Redis unreachable or too slow: the command times out), the
/// connection is admitted on this node's count alone: fail-open to per-node counting, so an
/// outage of Redis does not lock every user out, while a user still holds at most the cap per node.
/// The broker may still have counted it unseen (a timeout after Redis ran the script), so it is
/// released there at once: broker releases are idempotent, one for an uncounted connection does nothing.
struct UserSlot: Sendable, Hashable {
    enum State: Sendable, Hashable {
        /// Not counted: no cap, an anonymous client, a poll, or not connected yet.
        case uncounted
        /// Counted on this node; the broker's answer is awaited.
        case acquiring
        /// Admitted: counted on this node, and in the broker unless it could not answer.
        case held(inBroker: Bool)
        /// The connection ended while the broker's answer was awaited (this node's count is
        /// given back already; the broker's slot will be when the answer says it was taken).
        case abandoned
        /// Refused or ended: nothing held.
        case done
    }

    /// What the broker said.
    enum Answer: Sendable, Hashable {
        /// A slot was taken.
        case admitted
        /// The user holds the cap already (nothing taken).
        case refused
        /// No answer (an error or a timeout): nothing is known to be taken.
        case unavailable
    }

    /// What the session does with the broker's answer.
    enum AnswerAction: Sendable, Hashable {
        /// Go on with the connect; `degraded`: admitted on this node's count alone (then also
        /// release the connection in the broker, in case it was counted unseen).
        case admit(degraded: Bool)
        /// Give this node's count back and close with 3504.
        case refuse
        /// The connection is gone: give the broker's slot back (also after no answer, in case it
        /// was counted unseen).
        case releaseBroker
        /// Nothing to do.
        case none
    }

    /// What the session gives back when it ends.
    struct Release: Sendable, Hashable {
        /// This node's count.
        var local: Bool
        /// The broker's slot.
        var broker: Bool
    }

    private(set) var state: State = .uncounted
    /// The user counted (empty while uncounted).
    private(set) var user: String = ""
    /// The connection's id in the broker (its client id, unique in the cluster).
    private(set) var connection: String = ""

    /// This node counted `user`; the broker is asked next for `connection`.
    mutating func begin(user: String, connection: String) {
        guard case .uncounted = self.state else { return }
        self.user = user
        self.connection = connection
        self.state = .acquiring
    }

    /// The broker answered the acquire.
    mutating func answered(_ answer: Answer) -> AnswerAction {
        switch (self.state, answer) {
        case (.acquiring, .admitted):
            self.state = .held(inBroker: true)
            return .admit(degraded: false)
        case (.acquiring, .unavailable):
            self.state = .held(inBroker: false)
            return .admit(degraded: true)
        case (.acquiring, .refused):
            self.state = .done
            return .refuse
        case (.abandoned, .admitted), (.abandoned, .unavailable):
            self.state = .done
            return .releaseBroker
        case (.abandoned, .refused):
            self.state = .done
            return .none
        case (.uncounted, _), (.held, _), (.done, _):
            return .none
        }
    }

    /// The connection ended: what to give back now (at most once over the slot's life).
    mutating func end() -> Release {
        switch self.state {
        case .acquiring:
            self.state = .abandoned
            return Release(local: true, broker: false)
        case .held(let inBroker):
            self.state = .done
            return Release(local: true, broker: inBroker)
        case .uncounted, .abandoned, .done:
            return Release(local: false, broker: false)
        }
    }
}
