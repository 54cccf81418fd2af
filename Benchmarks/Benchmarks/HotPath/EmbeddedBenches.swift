import Benchmark
import NIOCore
import NIOEmbedded

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// An `EmbeddedEventLoop` may only be used from the thread that made it, and the benchmark runner
// may call setup hooks and benchmark bodies on different threads. So each bench is built inside
// the benchmark body on its first (warm-up) iteration, on the thread every later iteration runs
// on, and rebuilt should the thread ever change.

/// Fan-out benches by subscriber count, built on first use on the calling thread.
final class FanoutBenches: @unchecked Sendable {
    // @unchecked: each bench is keyed by and used only on the thread that built it (checked above each use).
    static let shared = FanoutBenches()

    private var benches: [Int: (thread: pthread_t, bench: FanoutBench)] = [:]

    func bench(subscribers: Int, path: FanoutBench.Path) -> FanoutBench {
        let key = subscribers * 2 + (path == .hub ? 1 : 0)
        if let existing = self.benches[key], pthread_equal(existing.thread, pthread_self()) != 0 {
            return existing.bench
        }
        do {
            let bench = try FanoutBench(subscribers: subscribers, path: path, payloadSize: payloadSize)
            self.benches[key] = (pthread_self(), bench)
            return bench
        } catch {
            fatalError("fan-out bench setup failed: \(error)")
        }
    }
}

/// The command-frame bench, built on first use on the calling thread.
final class CommandFrameBenches: @unchecked Sendable {
    // @unchecked: the bench is used only on the thread that built it (checked before each use).
    static let shared = CommandFrameBenches()

    private var current: (thread: pthread_t, bench: CommandFrameBench)?

    func bench() -> CommandFrameBench {
        if let current, pthread_equal(current.thread, pthread_self()) != 0 {
            return current.bench
        }
        do {
            let channel = EmbeddedChannel()
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            let bench = try CommandFrameBench(channel: channel)
            self.current = (pthread_self(), bench)
            return bench
        } catch {
            fatalError("command bench setup failed: \(error)")
        }
    }
}
