#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The standard Prometheus `process_*` metrics, read when `/metrics` is scraped.
///
/// The names and meanings are those of the official client libraries
/// (client_golang's process collector), so the usual dashboards and alerts
/// work unchanged. Values come from `/proc/self/stat`, `/proc/self/status`,
/// `/proc/self/fd` and `getrlimit`; a value the system does not offer (no
/// `/proc` outside Linux) is left out of the exposition rather than made up.
/// Reading them costs a few small file reads per scrape, off the hot path.
struct ProcessMetrics: Equatable {
    /// User plus system CPU time, in seconds.
    var cpuSeconds: Double?
    /// Resident set size (`VmRSS`), in bytes.
    var residentMemoryBytes: Int?
    /// Open file descriptors (the one used to count them left out).
    var openFDs: Int?
    /// The soft limit on open file descriptors (`RLIMIT_NOFILE`).
    var maxFDs: Int?
    /// When the process started, in seconds since the Unix epoch.
    var startTimeSeconds: Double?

    /// The metrics of this process now; `startTime` is the value from
    /// ``startTime()`` (it does not change, so the caller reads it once).
    static func sample(startTime: Double?) -> ProcessMetrics {
        var metrics = ProcessMetrics()
        metrics.startTimeSeconds = startTime
        let ticks = Self.clockTicksPerSecond()
        if let stat = Self.readSmallFile("/proc/self/stat"), let fields = Self.statFields(stat), ticks > 0 {
            metrics.cpuSeconds = Self.cpuSeconds(statFields: fields, ticksPerSecond: ticks)
        }
        if let status = Self.readSmallFile("/proc/self/status") {
            metrics.residentMemoryBytes = Self.residentBytes(status: status)
        }
        metrics.openFDs = Self.countOpenFDs()
        var limit = rlimit()
        if getrlimit(Self.fileLimitResource, &limit) == 0 {
            metrics.maxFDs = limit.rlim_cur == rlim_t.max ? Int.max : Int(clamping: limit.rlim_cur)
        }
        return metrics
    }

    /// This process's user plus system CPU time in seconds (one small file read); nil without `/proc`.
    static func cpuSecondsNow() -> Double? {
        let ticks = Self.clockTicksPerSecond()
        guard ticks > 0, let stat = Self.readSmallFile("/proc/self/stat"), let fields = Self.statFields(stat) else { return nil }
        return Self.cpuSeconds(statFields: fields, ticksPerSecond: ticks)
    }

    /// The process start time in seconds since the epoch: the start tick in
    /// `/proc/self/stat` plus the boot time in `/proc/stat`; nil without `/proc`.
    static func startTime() -> Double? {
        let ticks = Self.clockTicksPerSecond()
        guard ticks > 0,
              let stat = Self.readSmallFile("/proc/self/stat"), let fields = Self.statFields(stat),
              let procStat = Self.readSmallFile("/proc/stat", limit: 1 << 20), let boot = Self.bootTime(procStat: procStat)
        else { return nil }
        return Self.startTime(statFields: fields, ticksPerSecond: ticks, bootTime: boot)
    }

    /// Appends the text exposition of the values present.
    func write(into text: inout String) {
        if let cpuSeconds {
            Self.family(&text, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", Self.format(cpuSeconds))
        }
        if let residentMemoryBytes {
            Self.family(&text, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", String(residentMemoryBytes))
        }
        if let openFDs {
            Self.family(&text, "process_open_fds", "gauge", "Number of open file descriptors.", String(openFDs))
        }
        if let maxFDs {
            Self.family(&text, "process_max_fds", "gauge", "Maximum number of open file descriptors.", maxFDs == Int.max ? "+Inf" : String(maxFDs))
        }
        if let startTimeSeconds {
            Self.family(
                &text, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", Self.format(startTimeSeconds))
        }
    }

    // MARK: - Parsing (pure, tested on fixed text)

    /// The fields of `/proc/<pid>/stat` after the command name, so that index 0
    /// is field 3 (`state`) of proc(5). The name sits in parentheses and may
    /// hold spaces and parentheses itself: the fields start after the last `)`.
    static func statFields(_ stat: String) -> [Substring]? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        return fields.count >= 20 ? fields : nil
    }

    /// `utime` + `stime` (fields 14 and 15 of proc(5)) in seconds.
    static func cpuSeconds(statFields fields: [Substring], ticksPerSecond: Int) -> Double? {
        guard fields.count > 12, ticksPerSecond > 0,
              let user = UInt64(fields[11]), let system = UInt64(fields[12])
        else { return nil }
        return (Double(user) + Double(system)) / Double(ticksPerSecond)
    }

    /// `starttime` (field 22 of proc(5), clock ticks after boot) as seconds since the epoch.
    static func startTime(statFields fields: [Substring], ticksPerSecond: Int, bootTime: Double) -> Double? {
        guard fields.count > 19, ticksPerSecond > 0, let start = UInt64(fields[19]) else { return nil }
        return bootTime + Double(start) / Double(ticksPerSecond)
    }

    /// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
    static func bootTime(procStat: String) -> Double? {
        for line in procStat.split(separator: "\n") where line.hasPrefix("btime ") {
            guard let seconds = UInt64(line.dropFirst(6).trimmingSpaces()) else { return nil }
            return Double(seconds)
        }
        return nil
    }

    /// `VmRSS` of `/proc/<pid>/status` (given in kB) in bytes.
    static func residentBytes(status: String) -> Int? {
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard parts.count == 2, parts[1] == "kB", let kilobytes = Int(parts[0]) else { return nil }
            let (bytes, overflow) = kilobytes.multipliedReportingOverflow(by: 1024)
            return overflow ? nil : bytes
        }
        return nil
    }

    // MARK: - System access

    #if canImport(Glibc)
    private static let fileLimitResource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let fileLimitResource = RLIMIT_NOFILE
    #endif

    private static func clockTicksPerSecond() -> Int {
        Int(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The whole file as text, or nil when it cannot be read or exceeds `limit` bytes.
    static func readSmallFile(_ path: String, limit: Int = 64 * 1024) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > limit { return nil }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Entries of `/proc/self/fd`, without `.`, `..` and the directory's own descriptor.
    static func countOpenFDs() -> Int? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        defer { closedir(directory) }
        let own = String(dirfd(directory))
        // The name is read in place. `entry.pointee.d_name` would copy a whole `dirent` (280 bytes)
        // while glibc packs entries by their real length: for the last entries of its buffer the copy
        // read past the buffer's end, and a node with a few thousand sockets crashed on a /metrics
        // scrape when that buffer ended at an unmapped page.
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        var count = 0
        while let entry = readdir(directory) {
            let name = String(cString: UnsafeRawPointer(entry).advanced(by: nameOffset).assumingMemoryBound(to: CChar.self))
            if name == "." || name == ".." || name == own { continue }
            count += 1
        }
        return count
    }

    private static func family(_ text: inout String, _ name: String, _ type: String, _ help: String, _ value: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
    }

    private static func format(_ value: Double) -> String {
        value.isFinite ? "\(value)" : "NaN"
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var slice = self
        while slice.first == " " || slice.first == "\t" { slice = slice.dropFirst() }
        while slice.last == " " || slice.last == "\t" || slice.last == "\r" { slice = slice.dropLast() }
        return slice
    }
}
