import NIOCore

/// Which registry host names to look up and what they resolved to: the state of
/// `RegistryWatcher`'s lookups, as a value with no I/O (the watcher runs the lookups it returns on
/// NIO's thread pool and hands the answers back).
///
/// Rules: only current members are kept; a name is never looked up twice at once; a resolved name is
/// looked up again after `timeToLive`, and keeps its address while that lookup fails; a name that did
/// not resolve is tried again after `timeToLive` and reported once until it resolves; at most
/// `maximumPerRead` lookups start per registry read.
struct HostNameLookups {
    var timeToLive: TimeAmount = HostNameResolver.timeToLive
    var maximumPerRead: Int = HostNameResolver.maximumLookupsPerRead
    private var resolved: [String: (address: SocketAddress, at: NIODeadline)] = [:]
    private var failed: [String: NIODeadline] = [:]
    private var inFlight: Set<String> = []

    /// The members' addresses known so far (by node id), stale ones included.
    var addresses: [String: SocketAddress] { self.resolved.mapValues(\.address) }

    /// Takes a registry read's members at `now`; returns the named ones to look up now (marked in flight).
    mutating func due(members: [BackendNode], now: NIODeadline) -> [BackendNode] {
        let named = members.filter { !HostNameResolver.isIPLiteral($0.host) }
        let ids = Set(named.map(\.id))
        self.resolved = self.resolved.filter { ids.contains($0.key) }
        self.failed = self.failed.filter { ids.contains($0.key) }
        // One batch at a time: with a slow resolver and names that keep changing, batches would
        // otherwise pile up on the shared thread pool, a new one every read.
        guard self.inFlight.isEmpty else { return [] }
        var due: [BackendNode] = []
        for node in named where due.count < self.maximumPerRead {
            let fresh = self.resolved[node.id].map { now - $0.at < self.timeToLive } ?? false
            let failedLately = self.failed[node.id].map { now - $0 < self.timeToLive } ?? false
            if !fresh && !failedLately && self.inFlight.insert(node.id).inserted {
                due.append(node)
            }
        }
        return due
    }

    /// Records the answers of lookups started by `due`; returns the ids that failed for the first time
    /// since they last resolved (to be reported once).
    mutating func answered(_ answers: [(node: BackendNode, address: SocketAddress?)], at now: NIODeadline) -> [String] {
        var newlyFailed: [String] = []
        for (node, address) in answers {
            self.inFlight.remove(node.id)
            if let address {
                self.resolved[node.id] = (address, now)
                self.failed[node.id] = nil
            } else {
                if self.failed[node.id] == nil { newlyFailed.append(node.id) }
                self.failed[node.id] = now
            }
        }
        return newlyFailed
    }
}
