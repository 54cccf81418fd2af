/// What a run measured, as printed, written with `--json` and drawn with
/// `--html`. Built once at the end from the merged counters of every event
/// loop and process.
public struct BenchResult: Sendable, Codable {
    public struct Parameters: Sendable, Codable, Hashable {
        public var connections: Int
        public var connectRate: Double
        public var channels: Int
        public var messages: Int?
        public var messageRate: Double?
        public var payloadSize: Int?
        public var publishers: Int?
        public var publishVia: String?
        public var holdSeconds: Double?
        public var timeoutSeconds: Double

        enum CodingKeys: String, CodingKey {
            case connections, connectRate = "connect_rate", channels, messages, messageRate = "rate"
            case payloadSize = "payload", publishers, publishVia = "publish_via", holdSeconds = "hold_s"
            case timeoutSeconds = "timeout_s"
        }
    }

    public struct Connections: Sendable, Codable, Hashable {
        public var attempted: Int64
        public var established: Int64
        public var failed: Int64
        /// Closed by the server after being established.
        public var dropped: Int64
        public var subscribed: Int64
        public var subscribeErrors: Int64
        /// Server pings answered.
        public var pings: Int64
        /// Established connections per second, first dial to last connect reply.
        public var handshakesPerSecond: Double
        /// Dial start to connect reply (TCP, upgrade, `connect` round trip).
        public var handshakeMs: LatencySummary

        enum CodingKeys: String, CodingKey {
            case attempted, established, failed, dropped, subscribed, subscribeErrors = "subscribe_errors", pings
            case handshakesPerSecond = "handshakes_per_s", handshakeMs = "handshake_ms"
        }
    }

    public struct Publications: Sendable, Codable, Hashable {
        public var published: Int64
        public var publishAcks: Int64
        public var publishErrors: Int64
        public var publishedPerSecond: Double
        public var expected: Int64
        public var delivered: Int64
        /// expected - delivered (negative: duplicates).
        public var lost: Int64
        public var lossPercent: Double
        public var outOfOrder: Int64
        public var gaps: Int64
        public var unparsed: Int64
        /// Subscribers that never saw a warm-up publication.
        public var unwarmed: Int64
        /// Deliveries per second from the first measured delivery to the last.
        public var deliveriesPerSecond: Double
        public var deliverySeconds: Double
        /// Publish (payload `ts`) to delivery.
        public var latencyMs: LatencySummary

        enum CodingKeys: String, CodingKey {
            case published, publishAcks = "publish_acks", publishErrors = "publish_errors"
            case publishedPerSecond = "published_per_s", expected, delivered, lost, lossPercent = "loss_pct"
            case outOfOrder = "out_of_order", gaps, unparsed, unwarmed, deliveriesPerSecond = "deliveries_per_s"
            case deliverySeconds = "delivery_s", latencyMs = "latency_ms"
        }
    }

    /// The pingpong scenario's figures.
    public struct PingPong: Sendable, Codable, Hashable {
        /// Closed loops that ran (connections subscribed).
        public var loops: Int64
        /// Round trips started (publications sent), in the window and in flight at its end.
        public var sent: Int64
        /// Echoes matched to their send, including those that came back while draining.
        public var roundTrips: Int64
        /// Round trips completed inside the measured window.
        public var measuredRoundTrips: Int64
        public var measuredSeconds: Double
        public var roundTripsPerSecond: Double
        /// sent - matched - timed out: round trips whose echo never came back.
        public var lost: Int64
        public var timeouts: Int64
        public var duplicates: Int64
        public var late: Int64
        public var unexpected: Int64
        /// Publications of other connections seen on a shared channel.
        public var foreign: Int64
        public var offsetGaps: Int64
        public var publishErrors: Int64
        /// Round-trip latency: send to the matching echo (monotonic clock).
        public var latencyMs: LatencySummary
        /// Sum over the server PIDs of user + system CPU in the measured window.
        public var serverCPUSeconds: Double?
        public var serverCPUMicrosecondsPerRoundTrip: Double?

        enum CodingKeys: String, CodingKey {
            case loops, sent, roundTrips = "round_trips", measuredRoundTrips = "measured_round_trips"
            case measuredSeconds = "measured_s", roundTripsPerSecond = "round_trips_per_s", lost, timeouts
            case duplicates, late, unexpected, foreign, offsetGaps = "offset_gaps", publishErrors = "publish_errors"
            case latencyMs = "latency_ms", serverCPUSeconds = "server_cpu_s"
            case serverCPUMicrosecondsPerRoundTrip = "server_cpu_us_per_round_trip"
        }

        /// Builds the figures from merged counters and the servers' CPU (nil when no server was sampled).
        init(counters c: BenchCounters, serverCPUSeconds: Double?) {
            self.loops = c.subscribed
            self.sent = c.published
            self.roundTrips = c.delivered
            self.measuredRoundTrips = c.measuredRoundTrips
            let window = Double(c.measureEndNanoseconds - c.measureStartNanoseconds) / 1e9
            self.measuredSeconds = max(0, window)
            self.roundTripsPerSecond = window > 0 ? Double(c.measuredRoundTrips) / window : 0
            self.lost = max(0, c.published - c.delivered - c.roundTripTimeouts)
            self.timeouts = c.roundTripTimeouts
            self.duplicates = c.duplicateEchoes
            self.late = c.lateEchoes
            self.unexpected = c.unexpectedEchoes
            self.foreign = c.foreignEchoes
            self.offsetGaps = c.gaps
            self.publishErrors = c.publishErrors
            self.latencyMs = c.latency.summary
            self.serverCPUSeconds = serverCPUSeconds
            self.serverCPUMicrosecondsPerRoundTrip = serverCPUSeconds.flatMap {
                c.measuredRoundTrips > 0 ? $0 * 1e6 / Double(c.measuredRoundTrips) : nil
            }
        }
    }

    public struct Memory: Sendable, Codable, Hashable {
        /// Sum over the server PIDs of RSS growth, kB.
        public var rssGrowthKB: Int64
        public var connections: Int64
        public var kbPerConnection: Double
        /// What was compared: "open - before" (idle) or "end - before" (connect).
        public var basis: String

        enum CodingKeys: String, CodingKey {
            case rssGrowthKB = "rss_growth_kb", connections, kbPerConnection = "kb_per_connection", basis
        }
    }

    /// One second of the run.
    public struct SeriesPoint: Sendable, Codable, Hashable {
        public var second: Int
        public var established: Int64
        public var published: Int64
        public var deliveries: Int64
        public var latencyMeanMs: Double?
        public var latencyMaxMs: Double?

        enum CodingKeys: String, CodingKey {
            case second = "t", established, published, deliveries, latencyMeanMs = "latency_mean_ms"
            case latencyMaxMs = "latency_max_ms"
        }
    }

    public var tool = "switchboard-bench"
    public var scenario: BenchScenario
    public var urls: [String]
    public var publisherURLs: [String]
    public var processes: Int
    public var threadsPerProcess: Int
    public var startedAtUnixSeconds: Double
    public var elapsedSeconds: Double
    public var timedOut: Bool
    public var parameters: Parameters
    public var connections: Connections
    public var publications: Publications?
    public var pingPong: PingPong?
    /// CPUs the load generator was pinned to (`--cpus`), nil when not pinned.
    public var loadCPUs: [Int]?
    public var servers: [ServerSample]
    public var memory: Memory?
    /// Server-reported errors (error replies, disconnect and unsubscribe pushes).
    public var errors: Int64
    public var errorSamples: [String]
    public var notes: [String]
    public var series: [SeriesPoint]
    /// The full publish-to-deliver histogram (exactly mergeable).
    var latencyHistogram: LatencyHistogram
    var handshakeHistogram: LatencyHistogram

    enum CodingKeys: String, CodingKey {
        case tool, scenario, urls, publisherURLs = "publisher_urls", processes, threadsPerProcess = "threads_per_process"
        case startedAtUnixSeconds = "started_at_unix_s", elapsedSeconds = "elapsed_s", timedOut = "timed_out"
        case parameters, connections, publications, pingPong = "pingpong", loadCPUs = "load_cpus", servers, memory, errors, errorSamples = "error_samples", notes
        case series, latencyHistogram = "latency_histogram", handshakeHistogram = "handshake_histogram"
    }

    init(
        configuration: BenchConfiguration,
        counters: BenchCounters,
        servers: [ServerSample],
        processes: Int,
        threads: Int,
        startedAt: Int64,
        elapsedSeconds: Double,
        timedOut: Bool,
        notes: [String]
    ) {
        let c = counters
        self.scenario = configuration.scenario
        self.urls = configuration.urls.map(\.description)
        self.publisherURLs = configuration.scenario.publishes ? configuration.publisherURLs.map(\.description) : []
        self.processes = processes
        self.threadsPerProcess = threads
        self.startedAtUnixSeconds = Double(startedAt) / 1e9
        self.elapsedSeconds = elapsedSeconds
        self.timedOut = timedOut
        let publishes = configuration.scenario.publishes
        self.parameters = Parameters(
            connections: configuration.worker?.totalConnections ?? configuration.connections,
            connectRate: configuration.connectRate,
            channels: configuration.channels,
            messages: publishes ? configuration.messages : nil,
            messageRate: publishes ? configuration.messageRate : nil,
            payloadSize: publishes ? configuration.payloadSize : nil,
            publishers: publishes ? configuration.publishers : nil,
            publishVia: publishes ? configuration.publishVia.rawValue : nil,
            holdSeconds: publishes ? nil : configuration.hold,
            timeoutSeconds: configuration.timeout
        )
        let connectSpan = Double(c.connectEndNanoseconds - c.connectStartNanoseconds) / 1e9
        self.connections = Connections(
            attempted: c.attempted,
            established: c.connected,
            failed: c.failed,
            dropped: c.dropped,
            subscribed: c.subscribed,
            subscribeErrors: c.subscribeErrors,
            pings: c.pings,
            handshakesPerSecond: connectSpan > 0 ? Double(c.connected) / connectSpan : 0,
            handshakeMs: c.handshake.summary
        )
        if publishes {
            let deliverySpan = Double(c.lastDeliveryNanoseconds - c.firstDeliveryNanoseconds) / 1e9
            let publishSpan = Double(c.publishEndNanoseconds - c.publishStartNanoseconds) / 1e9
            let subscribers = c.connected
            self.publications = Publications(
                published: c.published,
                publishAcks: c.publishAcks,
                publishErrors: c.publishErrors,
                publishedPerSecond: publishSpan > 0 && c.published > 1 ? Double(c.published - 1) / publishSpan : 0,
                expected: c.expected,
                delivered: c.delivered,
                lost: c.expected - c.delivered,
                lossPercent: c.expected > 0 ? 100 * Double(c.expected - c.delivered) / Double(c.expected) : 0,
                outOfOrder: c.outOfOrder,
                gaps: c.gaps,
                unparsed: c.unparsed,
                unwarmed: max(0, subscribers - c.warmed),
                deliveriesPerSecond: deliverySpan > 0 ? Double(c.delivered) / deliverySpan : 0,
                deliverySeconds: max(0, deliverySpan),
                latencyMs: c.latency.summary
            )
        }
        self.servers = servers
        self.loadCPUs = configuration.cpus
        if configuration.scenario == .pingpong {
            let cpu = servers.compactMap(\.cpuSeconds)
            self.pingPong = PingPong(counters: c, serverCPUSeconds: cpu.isEmpty ? nil : cpu.reduce(0, +))
        }
        if !servers.isEmpty, c.connected > 0, !publishes, configuration.scenario != .pingpong {
            let useOpen = configuration.scenario == .idle
            var growth: Int64 = 0
            for server in servers {
                let top = (useOpen ? server.rssOpenKB : server.rssEndKB) ?? server.rssBeforeKB
                growth += top - server.rssBeforeKB
            }
            self.memory = Memory(
                rssGrowthKB: growth,
                connections: c.connected,
                kbPerConnection: Double(growth) / Double(c.connected),
                basis: useOpen ? "rss_open - rss_before" : "rss_end - rss_before"
            )
        }
        self.errors = c.errors
        self.errorSamples = c.errorSamples
        self.notes = notes
        self.series = c.series.seconds.enumerated().map { second, value in
            SeriesPoint(
                second: second,
                established: value.established,
                published: value.published,
                deliveries: value.deliveries,
                latencyMeanMs: value.deliveries > 0 ? LatencyHistogram.round(value.latencySumMicros / Double(value.deliveries) / 1000) : nil,
                latencyMaxMs: value.deliveries > 0 ? Double(value.latencyMaxMicros) / 1000 : nil
            )
        }
        self.latencyHistogram = c.latency
        self.handshakeHistogram = c.handshake
    }
}
