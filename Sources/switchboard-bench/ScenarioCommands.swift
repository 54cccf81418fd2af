import ArgumentParser
import SwitchboardBench

struct ConnectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "Open N connections at a target rate: handshakes/s, failures, handshake latency.",
        discussion: "Each connection upgrades, sends connect and waits for its reply, then subscribes (unless --no-subscribe); all are held --hold seconds and closed."
    )

    @OptionGroup var common: CommonOptions

    @Option(name: [.customShort("n"), .long], help: "Connections to open.")
    var connections: Int = 1000

    @Option(help: "Connections opened per second (0: as fast as --dial-concurrency allows).")
    var rate: Double = 2000

    @Option(name: .customLong("dial-concurrency"), help: "Handshakes in flight at most.")
    var dialConcurrency: Int = 256

    @Flag(inversion: .prefixedNo, help: "Subscribe each connection to a channel.")
    var subscribe = true

    @Option(help: "Channels to spread the subscriptions over (0: one per connection).")
    var channels: Int = 1

    @Option(help: "Seconds to hold the connections once all are open.")
    var hold: Double = 2

    func run() async throws {
        var c = try self.common.configuration(.connect)
        c.connections = self.connections
        c.connectRate = self.rate
        c.dialConcurrency = self.dialConcurrency
        c.subscribe = self.subscribe
        c.channels = self.channels
        c.hold = self.hold
        try await self.common.run(c)
    }
}

struct IdleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle",
        abstract: "Hold N subscribed connections and report the server's memory per connection.",
        discussion: "Samples VmRSS of every --server-pid before opening, after all are open and subscribed and --hold seconds of settling, and after closing; KB/connection = (open - before) / connections."
    )

    @OptionGroup var common: CommonOptions

    @Option(name: [.customShort("n"), .long], help: "Connections to hold.")
    var connections: Int = 1000

    @Option(help: "Connections opened per second (0: as fast as --dial-concurrency allows).")
    var rate: Double = 2000

    @Option(name: .customLong("dial-concurrency"), help: "Handshakes in flight at most.")
    var dialConcurrency: Int = 256

    @Option(help: "Channels: 0 gives each connection its own; K shares K channels.")
    var channels: Int = 0

    @Option(help: "Seconds to let the server settle with everything open before sampling.")
    var hold: Double = 5

    func run() async throws {
        var c = try self.common.configuration(.idle)
        c.connections = self.connections
        c.connectRate = self.rate
        c.dialConcurrency = self.dialConcurrency
        c.channels = self.channels
        c.hold = self.hold
        try await self.common.run(c)
    }
}

/// Options of the publishing scenarios; nil means the scenario's default.
struct PublishOptions: ParsableArguments {
    @Option(name: [.customShort("n"), .long], help: "Subscribers (default 1000; latency 100).")
    var subscribers: Int?

    @Option(help: "Channels: subscriber i joins channel i mod K, message j goes to channel j mod K (0: one per subscriber).")
    var channels: Int = 1

    @Option(help: "Messages to publish, all publishers together (default 200; latency 5000).")
    var messages: Int?

    @Option(help: "Messages per second, all publishers together; 0 = unpaced (default 500; latency 1000).")
    var rate: Double?

    @Option(help: "Payload bytes (JSON object with seq, ts and padding).")
    var payload: Int = 64

    @Option(help: "Publisher connections; message j is sent by publisher j mod P.")
    var publishers: Int = 1

    @Option(name: .customLong("publish-via"), help: "websocket (publish command) or api (POST /api/publish).")
    var publishVia: String = "websocket"

    @Option(name: .customLong("api-key"), help: "HTTP API key for --publish-via api.")
    var apiKey: String?

    @Option(name: .customLong("api-window"), help: "HTTP API requests in flight per publisher (pipelined).")
    var apiWindow: Int = 32

    @Option(
        name: .customLong("pub-url"),
        help: ArgumentHelp("Publishers' node URL(s) (default: the first --url).", valueName: "ws-url")
    )
    var publisherURLs: [String] = []

    @Option(name: .customLong("connect-rate"), help: "Subscriber connections opened per second (0: unpaced).")
    var connectRate: Double = 2000

    @Option(name: .customLong("dial-concurrency"), help: "Handshakes in flight at most.")
    var dialConcurrency: Int = 256

    @Option(help: "Seconds allowed for every subscriber to receive a warm-up publication.")
    var warmup: Double = 30

    @Option(help: "Stop this many seconds after the last delivery once publishing is over.")
    var idle: Double = 3

    @Option(name: .customLong("channel-prefix"), help: "Channels are named PREFIX.0, PREFIX.1, ...")
    var channelPrefix: String = "bench"

    func apply(to c: inout BenchConfiguration) throws {
        if let subscribers = self.subscribers { c.connections = subscribers }
        if let messages = self.messages { c.messages = messages }
        if let rate = self.rate { c.messageRate = rate }
        c.channels = self.channels
        c.payloadSize = self.payload
        c.publishers = self.publishers
        guard let via = PublishTransport(rawValue: self.publishVia) else {
            throw ValidationError("--publish-via must be websocket or api")
        }
        c.publishVia = via
        c.apiKey = self.apiKey
        c.apiWindow = self.apiWindow
        c.publisherURLs = try CommonOptions.parseURLs(self.publisherURLs)
        c.connectRate = self.connectRate
        c.dialConcurrency = self.dialConcurrency
        c.warmupTimeout = self.warmup
        c.idleTimeout = self.idle
        c.channelPrefix = self.channelPrefix
    }
}

struct FanoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "S subscribers over K channels, publishers at rate R with payload B: deliveries/s, loss, latency.",
        discussion: """
            Subscribers connect and subscribe; a warm-up publication must reach every subscriber before \
            measuring; then the publishers send --messages at --rate. Loss = expected - delivered; \
            out-of-order deliveries and offset gaps are counted per connection; deliveries/s runs from the \
            first measured delivery to the last.
            """
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var publish: PublishOptions

    func run() async throws {
        var c = try self.common.configuration(.fanout)
        try self.publish.apply(to: &c)
        try await self.common.run(c)
    }
}

struct LatencyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "latency",
        abstract: "Publish-to-deliver latency percentiles (p50/p90/p99/p99.9/max, HdrHistogram) at a rate the server sustains.",
        discussion: "The fanout flow with defaults for an unsaturated node: 100 subscribers, 5000 messages at 1000/s. Latency is measured from the ts in each payload (same machine clock)."
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var publish: PublishOptions

    func run() async throws {
        var c = try self.common.configuration(.latency)
        try self.publish.apply(to: &c)
        try await self.common.run(c)
    }
}

struct CrossNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cross-node",
        abstract: "Fanout across nodes: subscribers on some nodes, publishers on others, through the broker (Redis).",
        discussion: "Give the subscriber nodes with --url and the publisher nodes with --pub-url; or give two or more --url and the publishers use the first, the subscribers the rest."
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var publish: PublishOptions

    func run() async throws {
        var c = try self.common.configuration(.crossNode)
        try self.publish.apply(to: &c)
        try await self.common.run(c)
    }
}

struct PingPongCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pingpong",
        abstract: "N closed loops: publish, wait for the publication to come back, publish again: round trips/s, latency, server CPU per round trip.",
        discussion: """
            Every connection subscribes to its own channel (or, with --channels K, to one of K shared \
            channels) and, once all are subscribed, publishes and waits for its own publication to come \
            back before publishing the next. Each echo is matched to its send by seq (duplicates, late \
            and unexpected echoes are counted). The measured window ends after --duration or when \
            --max-round-trips were started; round trips still in flight then get --drain seconds to \
            return, and those that do not are lost. Give --server-pid for the server's CPU per round trip \
            (user + system time from /proc/PID/stat over the window), and --cpus to keep the generator \
            off the server's cores.
            """
    )

    @OptionGroup var common: CommonOptions

    @Option(name: [.customShort("n"), .long], help: "Closed loops (connections).")
    var connections: Int = 1000

    @Option(help: "Seconds of round trips to measure.")
    var duration: Double = 10

    @Option(name: .customLong("max-round-trips"), help: "Round trips started at most, all loops together.")
    var maxRoundTrips: Int = 10_000_000

    @Option(help: "Channels: 0 gives each loop its own channel; K shares K channels (each loop still waits for its own echo).")
    var channels: Int = 0

    @Option(help: "Payload bytes (JSON object with seq, ts, src and padding).")
    var payload: Int = 64

    @Option(name: .customLong("rt-timeout"), help: "Seconds without its echo before a round trip is given up and the loop publishes the next.")
    var roundTripTimeout: Double = 5

    @Option(help: "Seconds to wait for the round trips in flight when the window ends.")
    var drain: Double = 3

    @Option(name: .customLong("connect-rate"), help: "Connections opened per second (0: as fast as --dial-concurrency allows).")
    var connectRate: Double = 0

    @Option(name: .customLong("dial-concurrency"), help: "Handshakes in flight at most.")
    var dialConcurrency: Int = 256

    @Option(name: .customLong("channel-prefix"), help: "Channels are named PREFIX.0, PREFIX.1, ...")
    var channelPrefix: String = "pingpong"

    func run() async throws {
        var c = try self.common.configuration(.pingpong)
        c.connections = self.connections
        c.duration = self.duration
        c.maxRoundTrips = self.maxRoundTrips
        c.channels = self.channels
        c.payloadSize = self.payload
        c.roundTripTimeout = self.roundTripTimeout
        c.idleTimeout = self.drain
        c.connectRate = self.connectRate
        c.dialConcurrency = self.dialConcurrency
        c.channelPrefix = self.channelPrefix
        try await self.common.run(c)
    }
}

struct WorkerSubcommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Internal: a worker process of --procs (configuration and phases over stdin/stdout).",
        shouldDisplay: false
    )

    func run() async throws {
        let status = await Bench.runWorker()
        if status != 0 { throw ExitCode(status) }
    }
}
