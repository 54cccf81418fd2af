#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The machine's wall clock in Unix nanoseconds.
///
/// Publish timestamps travel in payloads between processes (publisher and
/// subscriber workers), so they use `CLOCK_REALTIME`, which every process on
/// the machine shares; `NIODeadline` is monotonic and per boot, which would do
/// too, but Unix time is what the payload format (`"ts"`) promises.
enum WallClock {
    static func nanoseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) &* 1_000_000_000 &+ Int64(spec.tv_nsec)
    }
}
