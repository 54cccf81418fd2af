#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One server process seen through /proc: resident memory before the run,
/// with every connection open, at the end of the hold or measurement, and
/// after the bench closed its connections; CPU used while measuring.
public struct ServerSample: Sendable, Codable, Hashable {
    public var pid: Int32
    public var rssBeforeKB: Int64
    public var rssOpenKB: Int64?
    public var rssEndKB: Int64?
    public var rssAfterCloseKB: Int64?
    public var cpuSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case pid, rssBeforeKB = "rss_before_kb", rssOpenKB = "rss_open_kb", rssEndKB = "rss_end_kb"
        case rssAfterCloseKB = "rss_after_close_kb", cpuSeconds = "cpu_s"
    }
}

/// Samples the servers' VmRSS (`/proc/PID/status`) and utime+stime
/// (`/proc/PID/stat`). Missing processes are skipped, not fatal.
struct ServerProcessWatch: Sendable {
    private(set) var samples: [ServerSample]
    private var cpuStartTicks: [Int32: Int64] = [:]

    init(pids: [Int32]) {
        self.samples = pids.map { ServerSample(pid: $0, rssBeforeKB: Self.rssKB(pid: $0) ?? 0) }
    }

    var isEmpty: Bool { self.samples.isEmpty }

    mutating func sampleOpen() {
        for i in self.samples.indices { self.samples[i].rssOpenKB = Self.rssKB(pid: self.samples[i].pid) }
    }

    mutating func sampleEnd() {
        for i in self.samples.indices {
            self.samples[i].rssEndKB = Self.rssKB(pid: self.samples[i].pid)
            if let start = self.cpuStartTicks[self.samples[i].pid], let now = Self.cpuTicks(pid: self.samples[i].pid) {
                self.samples[i].cpuSeconds = Double(now - start) / Double(Self.ticksPerSecond)
            }
        }
    }

    mutating func sampleAfterClose() {
        for i in self.samples.indices { self.samples[i].rssAfterCloseKB = Self.rssKB(pid: self.samples[i].pid) }
    }

    mutating func startCPU() {
        for sample in self.samples { self.cpuStartTicks[sample.pid] = Self.cpuTicks(pid: sample.pid) }
    }

    static var ticksPerSecond: Int { max(1, Int(sysconf(Int32(_SC_CLK_TCK)))) }

    /// VmRSS in kB, or nil when the process is gone.
    static func rssKB(pid: Int32) -> Int64? {
        guard let text = readFile("/proc/\(pid)/status") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int64($0) }
        }
        return nil
    }

    /// utime + stime in clock ticks.
    static func cpuTicks(pid: Int32) -> Int64? {
        readFile("/proc/\(pid)/stat").flatMap { Self.cpuTicks(stat: $0) }
    }

    /// utime + stime in clock ticks from the text of `/proc/PID/stat`. The
    /// command name (field 2) is in parentheses and may itself hold spaces
    /// and parentheses, so fields are counted from the last `)`.
    static func cpuTicks(stat text: String) -> Int64? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        // fields after "(comm)": state is field 3, utime 14, stime 15
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Int64(fields[11]), let system = Int64(fields[12]), user >= 0, system >= 0 else { return nil }
        return user &+ system
    }

    /// Reads a small file to the end (/proc files report size 0, so no stat).
    static func readFile(_ path: String, maximumBytes: Int = 1 << 20) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<max(1, maximumBytes / 4096) {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
