/// Everything one run needs; built by the `switchboard-bench` command line,
/// and sent as JSON to worker processes.
public struct BenchConfiguration: Sendable, Codable {
    /// One process holds at most this many sockets here (`RLIMIT_NOFILE` is
    /// 20,000; a few descriptors go to the runtime, pipes and event loops).
    public static let socketsPerProcess = 19_900

    public var scenario: BenchScenario
    /// Connection (subscriber) URLs; connections go round robin over them.
    public var urls: [BenchURL]
    /// Publisher URLs (fanout: default the first `urls`; cross-node: nodes without subscribers).
    public var publisherURLs: [BenchURL] = []
    /// connect/idle: connections to open; fanout/latency/cross-node: subscribers.
    public var connections: Int = 1000
    /// Connections opened per second; 0 = as fast as `dialConcurrency` allows.
    public var connectRate: Double = 2000
    /// Handshakes in flight at most.
    public var dialConcurrency: Int = 256
    /// connect: subscribe each connection to a channel after its connect reply.
    public var subscribe: Bool = true
    /// Channels: connection i joins channel i mod K, message j goes to channel j mod K; 0 = one per connection.
    public var channels: Int = 1
    /// Channels are named PREFIX.0, PREFIX.1, ...
    public var channelPrefix: String = "bench"
    /// Messages to publish (all publishers together).
    public var messages: Int = 200
    /// Messages per second (all publishers together); 0 = unpaced.
    public var messageRate: Double = 500
    /// Payload bytes (the JSON `data` object, padded with x).
    public var payloadSize: Int = 64
    /// Publisher connections; message j is sent by publisher j mod P.
    public var publishers: Int = 1
    public var publishVia: PublishTransport = .websocket
    /// Key for the HTTP API (`--publish-via api`).
    public var apiKey: String?
    /// HTTP API requests in flight per publisher connection (pipelined).
    public var apiWindow: Int = 32
    /// connect: seconds to hold the connections open; idle: seconds to let the server settle before sampling.
    public var hold: Double = 2
    /// Seconds allowed for every subscriber to receive a warm-up publication.
    public var warmupTimeout: Double = 30
    /// Stop this many seconds after the last delivery once publishing is over.
    public var idleTimeout: Double = 3
    /// Hard limit for the whole run, seconds.
    public var timeout: Double = 120
    /// Seconds from dial to connect reply before a connection counts as failed.
    public var handshakeTimeout: Double = 15
    /// Server processes whose RSS and CPU are sampled from /proc.
    public var serverPIDs: [Int32] = []
    /// First source address; this process uses `sourceAddressCount` consecutive ones.
    public var sourceAddress: String = "127.0.0.2"
    /// Source addresses per process; 0 = one per 10,000 connections.
    public var sourceAddressCount: Int = 0
    public var processes: ProcessCount = .fixed(1)
    /// Connections per worker with `processes == .auto`.
    public var connectionsPerProcess: Int = 15_000
    /// Event loop threads; 0 = one per core.
    public var threads: Int = 0
    /// Connection token (JWT) sent in `connect`.
    public var token: String?
    /// Connection tokens (`--token-file`): connection `i` sends `tokens[i % count]`; wins over `token`.
    public var tokens: [String] = []

    /// The token connection `index` sends.
    func token(forConnection index: Int) -> String? {
        self.tokens.isEmpty ? self.token : self.tokens[index % self.tokens.count]
    }
    /// Progress lines on stderr every second.
    public var progress: Bool = true
    /// pingpong: seconds of closed-loop round trips (the run stops earlier at `maxRoundTrips`).
    public var duration: Double = 10
    /// pingpong: round trips started at most, all connections together.
    public var maxRoundTrips: Int = 10_000_000
    /// pingpong: seconds without its echo before a round trip counts as timed out and the loop publishes the next.
    public var roundTripTimeout: Double = 5
    /// CPUs the load generator (and its worker processes) is pinned to; nil = not pinned.
    public var cpus: [Int]?
    /// Set by the coordinator for its worker processes.
    public var worker: WorkerAssignment?

    public init(scenario: BenchScenario, urls: [BenchURL]) {
        self.scenario = scenario
        self.urls = urls
        switch scenario {
        case .connect:
            self.hold = 2
        case .idle:
            self.channels = 0
            self.connectRate = 2000
            self.hold = 5
        case .fanout, .crossNode:
            break
        case .latency:
            self.connections = 100
            self.messages = 5000
            self.messageRate = 1000
        case .pingpong:
            self.channels = 0
            self.channelPrefix = "pingpong"
            self.connectRate = 0
        }
    }

    /// The number of load processes this run uses (1: no workers).
    public var processCount: Int {
        switch self.processes {
        case .fixed(let count): return max(1, count)
        case .auto: return max(1, (self.connections + self.connectionsPerProcess - 1) / max(1, self.connectionsPerProcess))
        }
    }

    /// Channels actually used (0 means one per connection).
    var channelCount: Int { self.channels > 0 ? self.channels : max(1, self.worker?.totalConnections ?? self.connections) }

    /// The channel name for a connection or message index.
    func channelName(_ index: Int) -> String {
        "\(self.channelPrefix).\(index % self.channelCount)"
    }

    /// Checks ranges and loopback-only addresses and fills in derived defaults
    /// (cross-node publisher split, source address count).
    public func validated() throws(BenchError) -> BenchConfiguration {
        var c = self
        func invalid(_ message: String) -> BenchError { BenchError(.invalidConfiguration, message) }
        guard !c.urls.isEmpty else { throw invalid("at least one --url is needed") }
        for url in c.urls + c.publisherURLs where !BenchURL.isLoopback(host: url.host) {
            throw BenchError(.notLoopback, "refusing \(url): not a loopback address")
        }
        if c.scenario == .crossNode, c.publisherURLs.isEmpty {
            guard c.urls.count >= 2 else {
                throw invalid("cross-node needs subscribers and publishers on different nodes: give two --url (publishers use the first) or --pub-url")
            }
            c.publisherURLs = [c.urls[0]]
            c.urls.removeFirst()
        }
        if c.scenario == .crossNode, Set(c.urls).intersection(c.publisherURLs).count > 0 {
            throw invalid("cross-node: --pub-url must name nodes without subscribers")
        }
        if c.publisherURLs.isEmpty { c.publisherURLs = [c.urls[0]] }
        guard (0...1_000_000).contains(c.connections) else { throw invalid("connections/subscribers must be 0...1000000") }
        if c.scenario.publishes, c.connections < 1 { throw invalid("at least one subscriber is needed") }
        guard c.connectRate >= 0, c.connectRate.isFinite else { throw invalid("--connect-rate must be >= 0") }
        guard (1...10_000).contains(c.dialConcurrency) else { throw invalid("--dial-concurrency must be 1...10000") }
        guard (0...1_000_000).contains(c.channels) else { throw invalid("--channels must be 0...1000000") }
        guard !c.channelPrefix.isEmpty, c.channelPrefix.utf8.count <= 200,
            c.channelPrefix.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || $0.properties.numericType != nil || ":._-".unicodeScalars.contains($0)) })
        else { throw invalid("--channel-prefix: use letters, digits and : . _ - (at most 200)") }
        guard (0...10_000_000).contains(c.messages) else { throw invalid("--messages must be 0...10000000") }
        guard c.messageRate >= 0, c.messageRate.isFinite else { throw invalid("--rate must be >= 0") }
        guard (0...60_000).contains(c.payloadSize) else { throw invalid("--payload must be 0...60000 bytes") }
        guard (1...1000).contains(c.publishers) else { throw invalid("--publishers must be 1...1000") }
        if c.publishVia == .api, (c.apiKey ?? "").isEmpty { throw invalid("--publish-via api needs --api-key") }
        guard (1...1024).contains(c.apiWindow) else { throw invalid("--api-window must be 1...1024") }
        for (name, value) in [("--hold", c.hold), ("--warmup", c.warmupTimeout), ("--idle", c.idleTimeout)]
        where !(value >= 0 && value <= 86_400) {
            throw invalid("\(name) must be 0...86400 seconds")
        }
        if c.scenario == .pingpong {
            guard c.connections >= 1 else { throw invalid("pingpong needs at least one connection") }
            guard c.duration > 0, c.duration <= 86_400 else { throw invalid("--duration must be 0...86400 seconds") }
            guard (1...1_000_000_000).contains(c.maxRoundTrips) else { throw invalid("--max-round-trips must be 1...1000000000") }
            guard c.roundTripTimeout > 0, c.roundTripTimeout <= 600 else { throw invalid("--rt-timeout must be 0...600 seconds") }
            guard c.processCount == 1 else {
                throw invalid("pingpong runs in one process (at most ~\(Self.socketsPerProcess) loops): --procs must be 1")
            }
        }
        if let cpus = c.cpus {
            guard !cpus.isEmpty, cpus.allSatisfy({ (0..<CPUAffinity.maximumCPUs).contains($0) }) else {
                throw invalid("--cpus: CPU numbers must be 0...\(CPUAffinity.maximumCPUs - 1)")
            }
        }
        guard c.timeout > 0, c.timeout <= 86_400 else { throw invalid("--timeout must be 0...86400 seconds") }
        guard c.handshakeTimeout > 0, c.handshakeTimeout <= 600 else { throw invalid("--handshake-timeout must be 0...600 s") }
        guard (0...256).contains(c.threads) else { throw invalid("--threads must be 0...256") }
        guard (1...1_000_000).contains(c.connectionsPerProcess) else { throw invalid("--per-proc must be positive") }
        for pid in c.serverPIDs where pid <= 0 { throw invalid("bad --server-pid \(pid)") }
        guard let first = IPv4.value(c.sourceAddress), first >> 24 == 127 else {
            throw BenchError(.notLoopback, "--src \(c.sourceAddress): source addresses must be IPv4 loopback (127.x.x.x)")
        }
        let procs = c.processCount
        guard procs <= 64 else { throw invalid("at most 64 load processes") }
        let perProcess = (c.connections + procs - 1) / procs
        if c.sourceAddressCount <= 0 { c.sourceAddressCount = max(1, (perProcess + 9_999) / 10_000) }
        guard c.sourceAddressCount <= 4096 else { throw invalid("--src-count must be at most 4096") }
        // the coordinator gives process k the block starting at first + k * count; one more for a publisher worker
        let last = UInt64(first) + UInt64(procs + 1) * UInt64(c.sourceAddressCount)
        guard last <= 0x7FFF_FFFF else { throw BenchError(.notLoopback, "source address block runs past 127.255.255.255") }
        var sockets = perProcess
        if procs == 1, c.scenario.publishes { sockets += c.publishers }
        if c.worker == nil, sockets > Self.socketsPerProcess {
            throw BenchError(
                .tooManySockets,
                "\(sockets) sockets in one process is more than the open-files limit allows (~\(Self.socketsPerProcess)): use --procs auto"
            )
        }
        return c
    }
}
