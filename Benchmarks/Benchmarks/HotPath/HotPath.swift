import Benchmark
import NIOCore
@_spi(Harness) import SwitchboardServer

// Allocation benchmarks for the hot path (issue 4, part 3). README.md beside Package.swift says
// how to run them and what the figures mean.
//
// Every benchmark but Noop runs 1,000 operations per sample (scalingFactor .kilo), and the
// starred figures are per operation. For the fan-out benchmarks an operation is one publication,
// so mallocCountTotal is mallocs per publication. Per delivery is that divided by the subscriber
// count, and FanoutScaling10/100 against FanoutTo1000 shows whether anything grows with
// subscribers.

let payloadSize = 100

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.mallocCountTotal, .cpuTotal, .wallClock, .throughput],
        warmupIterations: 3,
        maxDuration: .seconds(2),
        maxIterations: 10_000,
        // `thresholds check` compares the p90 malloc count per sample (1,000 operations for the
        // scaled benchmarks) with Thresholds/; the slack absorbs the harness's own 16-20 mallocs
        // per sample, so one extra malloc per publication (+1,000) or per delivery fails it.
        // Times are not checked: these shared machines are too noisy for that.
        thresholds: [.mallocCountTotal: .init(absolute: [.p90: 50])]
    )

    // The harness's own floor: one sample of an empty body (scalingFactor .one).
    Benchmark("Noop") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(0) }
    }

    // MARK: Encode

    Benchmark(
        "EncodePublication",
        configuration: .init(scalingFactor: .kilo)
    ) { benchmark in
        let allocator = ByteBufferAllocator()
        let publication = HotPathInputs.samplePublication(payloadSize: payloadSize)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(NodeHarness.encode(publication, channel: "news", allocator: allocator).webSocketFrame)
        }
    }

    // MARK: Fan-out

    // Each sample runs 1,000 publications (scalingFactor .kilo); the starred (scaled) figures
    // are per publication. One publication is `subscribers` deliveries.

    // One encoded frame through `LoopFanout.apply` (the per-loop step): a write to every
    // subscriber, then one flush per session.
    Benchmark(
        "FanoutTo1000",
        configuration: .init(scalingFactor: .kilo, maxDuration: .seconds(5))
    ) { benchmark in
        let bench = FanoutBenches.shared.bench(subscribers: 1_000, path: .loop)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { bench.deliverOne() }
    }

    for subscribers in [10, 100] {
        Benchmark(
            "FanoutScaling\(subscribers)",
            configuration: .init(scalingFactor: .kilo)
        ) { benchmark in
            let bench = FanoutBenches.shared.bench(subscribers: subscribers, path: .loop)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { bench.deliverOne() }
        }
    }

    // The same publication arriving as a broker event: the hub orders it, encodes it once,
    // batches it for the loop, and the loop delivers it (everything but the broker and the socket).
    for subscribers in [10, 100, 1_000] {
        Benchmark(
            "HubPublishTo\(subscribers)",
            configuration: .init(scalingFactor: .kilo, maxDuration: .seconds(subscribers >= 1_000 ? 5 : 2))
        ) { benchmark in
            let bench = FanoutBenches.shared.bench(subscribers: subscribers, path: .hub)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { bench.deliverOne() }
        }
    }

    // MARK: Decode

    // A publish command's JSON text to a `ClientMessage`, as `ClientSession.channelRead` does.
    Benchmark(
        "DecodeCommand",
        configuration: .init(scalingFactor: .kilo)
    ) { benchmark in
        let payload = HotPathInputs.publishCommand(channel: "news", payloadSize: payloadSize)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try? HotPathInputs.decodeCommand(payload))
        }
    }

    // The same command as a masked client frame: NIO's frame decoder, the server's frame handler
    // (unmasking, UTF-8 check), then the decoding above.
    Benchmark(
        "DecodeCommandFrame",
        configuration: .init(scalingFactor: .kilo)
    ) { benchmark in
        let bench = CommandFrameBenches.shared.bench()
        let frame = HotPathInputs.maskedTextFrame(
            HotPathInputs.publishCommand(channel: "news", payloadSize: payloadSize))
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { bench.decode(frame) }
    }
}
