import Foundation
import NIOCore

/// How many event loops a node (or the balancer) starts by default: one per core the process may
/// run on.
///
/// `System.coreCount` follows cgroup CPU quotas and cpusets but not the process's affinity mask, so a
/// process started with `taskset -c 0` (or `numactl`, or a runtime that pins without a cpuset) would
/// run one loop per core of the machine on that one core. Every hop between two loops, such as a
/// publication handed from the channel's loop to a subscriber's, would then wait for the other
/// loop's time slice: milliseconds under load. Go's runtime sizes `GOMAXPROCS` from the affinity
/// mask for the same reason.
public enum UsableCores {
    /// The smaller of NIO's core count and the CPUs in this process's affinity mask (at least 1).
    public static func count() -> Int {
        let cores = System.coreCount
        #if os(Linux)
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8), let allowed = Self.allowedCPUs(status: status) {
            return max(1, min(cores, allowed))
        }
        #endif
        return max(1, cores)
    }

    /// The number of CPUs in the `Cpus_allowed_list:` line of a `/proc/PID/status` text (`0-3,8,10-11`
    /// gives 7); nil when the line is missing or malformed.
    static func allowedCPUs(status: String) -> Int? {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { return nil }
        let list = line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces)
        guard !list.isEmpty else { return nil }
        var total = 0
        for item in list.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = item.split(separator: "-", omittingEmptySubsequences: false)
            // CPU numbers are small: anything past 1 << 20 is not a CPU list (and never overflows a sum).
            guard (1...2).contains(bounds.count), let low = Int(bounds[0]), let high = Int(bounds[bounds.count - 1]),
                (0...(1 << 20)).contains(low), (low...(1 << 20)).contains(high)
            else { return nil }
            total += high - low + 1
        }
        return total > 0 ? total : nil
    }
}
