/// How many connections each user holds on this node, and whether one more may connect
/// (`limits.connectionsPerUser`).
///
/// A plain value kept behind a lock by `NodeContext` and touched once per `connect` and once per
/// close of a counted connection, never on the fan-out path. Only users with a connection open are
/// in the table, so it is bounded by the connections the node holds. Anonymous connections are not
/// counted (they have no user to count by: `--max-connections-per-ip` bounds them).
///
/// This node's count only: the cluster-wide count is the broker's (`Broker.acquireUserConnection`,
/// asked next by the session). This one refuses without a broker round trip when the node alone
/// holds the cap, and is the cap that still holds when the broker cannot answer (fail-open).
struct UserConnectionCounts: Sendable, Hashable {
    /// Connections one user may hold; 0: no cap.
    let maximumPerUser: Int
    private(set) var byUser: [String: Int] = [:]

    init(maximumPerUser: Int) {
        self.maximumPerUser = max(0, maximumPerUser)
    }

    /// Whether connections of `user` are counted at all.
    func counts(_ user: String) -> Bool {
        self.maximumPerUser > 0 && !user.isEmpty
    }

    /// Counts one more connection of `user`: true when admitted (`release` must follow when it
    /// closes), false when the user holds the maximum already (nothing counted). Users that are not
    /// counted are always admitted.
    mutating func admit(_ user: String) -> Bool {
        guard self.counts(user) else { return true }
        let current = self.byUser[user, default: 0]
        guard current < self.maximumPerUser else { return false }
        self.byUser[user] = current + 1
        return true
    }

    /// A counted connection of `user` closed.
    mutating func release(_ user: String) {
        guard self.counts(user), let current = self.byUser[user] else { return }
        self.byUser[user] = current > 1 ? current - 1 : nil
    }
}
