#if canImport(Glibc)
import Glibc
#endif
@testable import SwitchboardServer
import Testing

/// The `/metrics` exposition: help on every family, the `process_*` metrics
/// and the build info; the `/proc` parsing on fixed text.
@Suite struct NodeMetricsTests {
    /// A `/proc/self/stat` line whose command name holds spaces and parentheses.
    static let stat =
        "4242 (switch (board) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 9 0 123456 912345678 4321 "
        + "18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 17 1 0 0 0 0 0"

    @Test func statFieldsStartAfterTheLastParenthesis() throws {
        let fields = try #require(ProcessMetrics.statFields(Self.stat))
        #expect(fields[0] == "S")
        #expect(fields[11] == "250")
        #expect(fields[12] == "75")
        #expect(fields[19] == "123456")
    }

    @Test func cpuAndStartTimeFromTicks() throws {
        let fields = try #require(ProcessMetrics.statFields(Self.stat))
        #expect(ProcessMetrics.cpuSeconds(statFields: fields, ticksPerSecond: 100) == 3.25)
        #expect(ProcessMetrics.startTime(statFields: fields, ticksPerSecond: 100, bootTime: 1_700_000_000) == 1_700_001_234.56)
    }

    @Test func malformedProcTextGivesNothing() {
        #expect(ProcessMetrics.statFields("4242 no parenthesis here") == nil)
        #expect(ProcessMetrics.statFields("1 (x) S 1 2") == nil)
        #expect(ProcessMetrics.bootTime(procStat: "cpu 1 2 3\nintr 5\n") == nil)
        #expect(ProcessMetrics.residentBytes(status: "Name:\tx\nVmRSS:\t 12 MB\n") == nil)
        #expect(ProcessMetrics.residentBytes(status: "VmRSS:\t99999999999999999999 kB\n") == nil)
    }

    @Test func bootTimeAndResidentMemory() {
        #expect(ProcessMetrics.bootTime(procStat: "cpu  1 2 3\nbtime 1764700000\nprocesses 9\n") == 1_764_700_000)
        let status = "Name:\tswitchboard\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n"
        #expect(ProcessMetrics.residentBytes(status: status) == 2048 * 1024)
    }

    #if os(Linux)
    @Test func thisProcessIsMeasured() throws {
        let metrics = ProcessMetrics.sample(startTime: ProcessMetrics.startTime())
        let cpu = try #require(metrics.cpuSeconds)
        #expect(cpu >= 0)
        #expect(try #require(metrics.residentMemoryBytes) > 1024 * 1024)
        let open = try #require(metrics.openFDs)
        #expect(open >= 3)
        #expect(try #require(metrics.maxFDs) >= open)
        let started = try #require(metrics.startTimeSeconds)
        #expect(started > 1_600_000_000)
    }
    #endif

    @Test func everyFamilyHasHelpAndType() throws {
        let metrics = NodeMetrics(version: "9.8.7", commit: "abc123")
        let text = metrics.exposition()
        var helped = Set<String>()
        var typed = Set<String>()
        var sampled = Set<String>()
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 3)
            if line.hasPrefix("# HELP ") {
                #expect(words.count == 4, "empty help: \(line)")
                helped.insert(String(words[2]))
            } else if line.hasPrefix("# TYPE ") {
                typed.insert(String(words[2]))
            } else if !line.hasPrefix("#") {
                var name = String(line.prefix { $0 != "{" && $0 != " " })
                for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) && !helped.contains(name) {
                    name.removeLast(suffix.count)
                }
                sampled.insert(name)
            }
        }
        #expect(!sampled.isEmpty)
        #expect(sampled.subtracting(helped).isEmpty, "no HELP for \(sampled.subtracting(helped).sorted())")
        #expect(sampled.subtracting(typed).isEmpty, "no TYPE for \(sampled.subtracting(typed).sorted())")
        #expect(text.contains("switchboard_build_info{version=\"9.8.7\",commit=\"abc123\"} 1"))
        #expect(sampled.contains("switchboard_refused_connections_total"))
        #expect(sampled.contains("switchboard_request_timeouts_total"))
        #if os(Linux)
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds"] {
            #expect(sampled.contains(name), "missing \(name)")
        }
        #endif
    }

    @Test(arguments: [
        ("4409b3b", "4409b3b"),
        ("v0.1.0-3-g4409b3b_dirty", "v0.1.0-3-g4409b3b_dirty"),
        ("", "unknown"),
        ("abc\"} 2\nevil 1", "unknown"),
        ("é", "unknown"),
        (String(repeating: "a", count: 65), "unknown"),
    ])
    func commitLabelIsBounded(input: String, expected: String) {
        #expect(NodeMetrics.validCommit(input) == expected)
    }

    #if os(Linux)
    /// A node with thousands of sockets open is scraped: the `/proc/self/fd` listing fills the C
    /// library's buffer, whose last entries end close to its end. Reading each name by copying a whole
    /// `dirent` read past that end and crashed a node (SIGSEGV in a loaded run; AddressSanitizer calls it
    /// a heap-buffer-overflow). Listings of every length from 3,000 files down, each counted.
    @Test func openFilesAreCountedWithThousandsOpen() throws {
        var opened: [Int32] = []
        defer { for fd in opened { close(fd) } }
        for _ in 0..<3000 {
            let fd = open("/dev/null", O_RDONLY)
            try #require(fd >= 0)
            opened.append(fd)
        }
        let full = try #require(ProcessMetrics.countOpenFDs())
        #expect(full >= 3000)
        while opened.count > 1500 {
            close(opened.removeLast())
            _ = ProcessMetrics.countOpenFDs()
        }
        #expect(try #require(ProcessMetrics.countOpenFDs()) >= 1500)
    }
    #endif
}
