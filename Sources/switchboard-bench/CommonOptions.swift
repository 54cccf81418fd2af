import ArgumentParser
import Foundation
import SwitchboardBench

/// Options every scenario takes: where to connect, limits, processes, outputs.
struct CommonOptions: ParsableArguments {
    @Option(
        name: .customLong("url"),
        help: ArgumentHelp("Node WebSocket URL; repeat or comma-separate for several nodes (round robin).", valueName: "ws-url")
    )
    var urls: [String] = ["ws://127.0.0.1:8000/ws"]

    @Option(name: .customLong("src"), help: "First source address (127.x.x.x); processes get consecutive blocks.")
    var sourceAddress: String = "127.0.0.2"

    @Option(name: .customLong("src-count"), help: "Source addresses per process (0: one per 10,000 connections).")
    var sourceAddressCount: Int = 0

    @Option(name: .customLong("procs"), help: "Load processes: a number, or auto (one per --per-proc connections).")
    var processes: String = "1"

    @Option(name: .customLong("per-proc"), help: "Connections per worker process with --procs auto.")
    var connectionsPerProcess: Int = 15_000

    @Option(help: "Event loop threads per process (0: one per core).")
    var threads: Int = 0

    @Option(
        name: .customLong("server-pid"),
        help: ArgumentHelp(
            "Server PID to sample RSS and CPU from /proc; repeat or comma-separate. auto: the processes listening on the --url ports.",
            valueName: "pid"
        )
    )
    var serverPIDs: [String] = []

    @Option(
        name: .customLong("cpus"),
        help: ArgumentHelp(
            "Pin the load generator and its worker processes to these CPUs (taskset -c style: 1, 0,2 or 0-3), to keep the server's cores free.",
            valueName: "list"
        )
    )
    var cpus: String?

    @Option(help: "Hard limit for the whole run, seconds.")
    var timeout: Double = 120

    @Option(name: .customLong("handshake-timeout"), help: "Seconds from dial to connect reply before a connection fails.")
    var handshakeTimeout: Double = 15

    @Option(help: "Connection token (JWT) sent in connect.")
    var token: String?

    @Option(
        name: .customLong("token-file"),
        help: ArgumentHelp(
            "Connection tokens, one per line: connection i sends line i mod N (a different token per connection, as real clients have).",
            valueName: "file"))
    var tokenFile: String?

    @Option(help: ArgumentHelp("Write the result as JSON to this file.", valueName: "file"))
    var json: String?

    @Option(help: ArgumentHelp("Write a self-contained HTML report (inline SVG charts) to this file.", valueName: "file"))
    var html: String?

    @Flag(help: "No progress lines on stderr.")
    var quiet = false

    func configuration(_ scenario: BenchScenario) throws -> BenchConfiguration {
        let urls = try Self.parseURLs(self.urls)
        var c = BenchConfiguration(scenario: scenario, urls: urls)
        c.sourceAddress = self.sourceAddress
        c.sourceAddressCount = self.sourceAddressCount
        guard let processes = ProcessCount(self.processes) else {
            throw ValidationError("--procs must be a positive number or auto")
        }
        c.processes = processes
        c.connectionsPerProcess = self.connectionsPerProcess
        c.threads = self.threads
        var pids: [Int32] = []
        for text in self.serverPIDs.flatMap({ $0.split(separator: ",") }).map({ $0.trimmingCharacters(in: " ") }) {
            if text == "auto" {
                let found = ServerDiscovery.listeningPIDs(ports: Set(urls.map(\.port)))
                guard !found.isEmpty else {
                    throw ValidationError("--server-pid auto: no process visible listening on port(s) \(Set(urls.map(\.port)).sorted())")
                }
                pids += found
            } else {
                guard let pid = Int32(text) else { throw ValidationError("bad --server-pid \(text)") }
                pids.append(pid)
            }
        }
        c.serverPIDs = Array(Set(pids)).sorted()
        if let cpus = self.cpus {
            guard let list = CPUAffinity.parse(cpus) else {
                throw ValidationError("--cpus \(cpus): give CPU numbers and ranges, e.g. 1 or 0,2 or 0-3")
            }
            c.cpus = list
        }
        c.timeout = self.timeout
        c.handshakeTimeout = self.handshakeTimeout
        c.token = self.token
        if let tokenFile = self.tokenFile {
            guard self.token == nil else { throw ValidationError("give --token or --token-file, not both") }
            guard let data = FileManager.default.contents(atPath: tokenFile), data.count <= 256 << 20 else {
                throw ValidationError("--token-file \(tokenFile): cannot read it (or it is over 256 MB)")
            }
            c.tokens = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty }
            guard !c.tokens.isEmpty else { throw ValidationError("--token-file \(tokenFile) holds no token") }
        }
        c.progress = !self.quiet
        return c
    }

    static func parseURLs(_ values: [String]) throws -> [BenchURL] {
        var urls: [BenchURL] = []
        for text in values.flatMap({ $0.split(separator: ",") }) {
            do {
                urls.append(try BenchURL(text.trimmingCharacters(in: " ")))
            } catch {
                throw ValidationError(error.message)
            }
        }
        return urls
    }

    /// Runs, prints the table, writes the files.
    func run(_ configuration: BenchConfiguration) async throws {
        let result: BenchResult
        do {
            // before any event loop thread exists; workers inherit the mask
            if let cpus = configuration.cpus { try CPUAffinity.pin(to: cpus) }
            result = try await Bench.run(configuration, progress: { Bench.printToStandardError($0) })
        } catch let error as BenchError {
            throw ValidationError(error.message)
        }
        print(ResultTable.render(result), terminator: "")
        if let json = self.json { try Bench.writeJSON(result, to: json) }
        if let html = self.html { try Bench.writeHTML(result, to: html) }
    }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var text = Substring(self)
        while text.first == set { text = text.dropFirst() }
        while text.last == set { text = text.dropLast() }
        return String(text)
    }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> String { String(self).trimmingCharacters(in: set) }
}
