#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Pins the load generator to a set of CPUs (`--cpus 1` or `--cpus 0-1,3`),
/// so that a run can keep the server's cores free of load generation.
///
/// Linux's `sched_setaffinity` applies to one thread, so `pin` sets every
/// thread the process has at the time (`/proc/self/task`); threads started
/// later (event loops) and worker processes inherit the mask.
public enum CPUAffinity {
    /// CPU numbers must be below this (glibc's `CPU_SETSIZE`).
    public static let maximumCPUs = 1024

    /// Parses a `taskset -c` style list: numbers and ranges, comma-separated
    /// (`"1"`, `"0,2"`, `"0-3,6"`). Returns the CPUs ascending, without
    /// duplicates; nil for anything else or a number at or above `maximumCPUs`.
    public static func parse(_ text: String) -> [Int]? {
        var cpus = Set<Int>()
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        guard !parts.isEmpty else { return nil }
        for part in parts {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count),
                bounds.allSatisfy({ !$0.isEmpty && $0.count <= 4 && $0.allSatisfy { $0 >= "0" && $0 <= "9" } }),
                let low = Int(bounds[0]), let high = Int(bounds[bounds.count - 1]),
                low <= high, high < Self.maximumCPUs
            else { return nil }
            for cpu in low...high { cpus.insert(cpu) }
        }
        return cpus.sorted()
    }

    /// Pins every thread of this process to `cpus`. Throws when the kernel
    /// refuses (for example no listed CPU is online).
    public static func pin(to cpus: [Int]) throws(BenchError) {
        #if os(Linux)
        guard let set = Self.functions?.set else {
            throw BenchError(.invalidConfiguration, "--cpus: sched_setaffinity is not available")
        }
        var mask = [UInt64](repeating: 0, count: Self.maximumCPUs / 64)
        for cpu in cpus where cpu >= 0 && cpu < Self.maximumCPUs {
            mask[cpu / 64] |= 1 << UInt64(cpu % 64)
        }
        var threads = Self.threadIDs()
        if threads.isEmpty { threads = [0] }
        for tid in threads {
            let status = mask.withUnsafeBytes { set(tid, $0.count, $0.baseAddress) }
            if status != 0 {
                let code = errno
                if code == ESRCH { continue }  // the thread ended meanwhile
                throw BenchError(.invalidConfiguration, "--cpus \(cpus): sched_setaffinity failed (errno \(code))")
            }
        }
        #else
        throw BenchError(.invalidConfiguration, "--cpus is supported on Linux only")
        #endif
    }

    /// The CPUs this thread may run on (for checks and reports); nil where unsupported.
    public static func current() -> [Int]? {
        #if os(Linux)
        guard let get = Self.functions?.get else { return nil }
        var mask = [UInt64](repeating: 0, count: Self.maximumCPUs / 64)
        let status = mask.withUnsafeMutableBytes { get(0, $0.count, $0.baseAddress) }
        guard status == 0 else { return nil }
        var cpus: [Int] = []
        for (index, word) in mask.enumerated() where word != 0 {
            for bit in 0..<64 where word & (1 << UInt64(bit)) != 0 {
                cpus.append(index * 64 + bit)
            }
        }
        return cpus
        #else
        return nil
        #endif
    }

    #if os(Linux)
    typealias SetAffinity = @convention(c) (Int32, Int, UnsafeRawPointer?) -> Int32
    typealias GetAffinity = @convention(c) (Int32, Int, UnsafeMutableRawPointer?) -> Int32

    /// glibc's `sched_setaffinity`/`sched_getaffinity`, looked up at run
    /// time: Swift's Glibc module does not declare them (they are behind
    /// `_GNU_SOURCE`).
    static let functions: (set: SetAffinity, get: GetAffinity)? = {
        guard let handle = dlopen(nil, RTLD_NOW), let set = dlsym(handle, "sched_setaffinity"),
            let get = dlsym(handle, "sched_getaffinity")
        else { return nil }
        return (unsafeBitCast(set, to: SetAffinity.self), unsafeBitCast(get, to: GetAffinity.self))
    }()
    #endif

    /// Thread ids of this process, from `/proc/self/task`.
    static func threadIDs() -> [Int32] {
        DirectoryNames.list("/proc/self/task").compactMap { Int32($0) }
    }
}
