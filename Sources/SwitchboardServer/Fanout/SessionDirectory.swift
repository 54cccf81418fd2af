/// Which event loop holds each connected client, each user's clients, and how
/// many sessions each transport has: what the server API and control messages
/// (disconnect a user, unsubscribe a user, commands for an SSE session) need to
/// find a session. A plain value owned by the hub; every entry leaves with its session.
struct SessionDirectory {
    private(set) var loopByClient: [String: Int] = [:]
    private var clientsByUser: [String: Set<String>] = [:]
    /// Sessions by transport (`TransportName.index`), for the connections gauge.
    private(set) var countByTransport = [Int](repeating: 0, count: TransportName.allCases.count)

    var count: Int { self.loopByClient.count }

    mutating func register(client: String, user: String, loop: Int, transport: TransportName) {
        self.loopByClient[client] = loop
        self.countByTransport[transport.index] += 1
        if !user.isEmpty { self.clientsByUser[user, default: []].insert(client) }
    }

    mutating func unregister(client: String, user: String, transport: TransportName) {
        guard self.loopByClient.removeValue(forKey: client) != nil else { return }
        self.countByTransport[transport.index] -= 1
        if !user.isEmpty {
            self.clientsByUser[user]?.remove(client)
            if self.clientsByUser[user]?.isEmpty == true { self.clientsByUser[user] = nil }
        }
    }

    func loop(of client: String) -> Int? {
        self.loopByClient[client]
    }

    /// The sessions a control message names (a client, every client of a user, or both), with their loops.
    func sessions(client: String?, user: String?) -> [(client: String, loop: Int)] {
        var found: [(client: String, loop: Int)] = []
        if let client, let loop = self.loopByClient[client] { found.append((client, loop)) }
        if let user {
            for other in self.clientsByUser[user] ?? [] where other != client {
                if let loop = self.loopByClient[other] { found.append((other, loop)) }
            }
        }
        return found
    }
}
