import Foundation
import NIOCore
import SwitchboardCore

/// The load generator's entry points: run a scenario (in this process, or
/// over worker processes when it needs more sockets than one process may
/// hold), serve as a worker, and write reports.
public enum Bench {
    /// Runs `configuration` and returns what it measured.
    ///
    /// - Parameters:
    ///   - progress: receives a progress line every second (stderr in the CLI); nil for none.
    ///   - workerExecutable: the `switchboard-bench` binary workers run as
    ///     (default: this process's own executable).
    public static func run(
        _ configuration: BenchConfiguration,
        progress: (@Sendable (String) -> Void)? = nil,
        workerExecutable: String? = nil
    ) async throws -> BenchResult {
        let configuration = try configuration.validated()
        let sink = configuration.progress ? progress : nil
        if configuration.processCount > 1 {
            let executable = workerExecutable ?? Self.ownExecutable()
            return try await ProcessCoordinator(configuration: configuration, executable: executable, progressSink: sink).run()
        }
        let runner = try BenchRunner(configuration: configuration, link: nil)
        let started = NIODeadline.now()
        var lineSink: (@Sendable (ProgressCounts, String) -> Void)?
        if let sink {
            lineSink = { _, line in sink(line) }
        }
        let counters = await runner.execute(progressSink: lineSink)
        return BenchResult(
            configuration: configuration,
            counters: counters,
            servers: runner.watch?.samples ?? [],
            processes: 1,
            threads: runner.threadCount,
            startedAt: runner.startNanoseconds,
            elapsedSeconds: Double((NIODeadline.now() - started).nanoseconds) / 1e9,
            timedOut: runner.timedOut,
            notes: runner.notes
        )
    }

    /// Runs as a worker process: reads its configuration from stdin, reports
    /// phases and progress on stdout as JSON lines, and ends with its result.
    /// Returns the process exit status.
    public static func runWorker() async -> Int32 {
        let link = WorkerLink()
        do {
            let configuration = try WorkerLink.readStart()
            link.startReading()
            let runner = try BenchRunner(configuration: configuration, link: link)
            let counters = await runner.execute(progressSink: { counts, _ in
                link.emit(WorkerEvent(kind: .progress, progress: counts))
            })
            link.emit(WorkerEvent(kind: .result, counters: counters, timedOut: runner.timedOut, notes: runner.notes))
            return 0
        } catch {
            link.emit(WorkerEvent(kind: .failure, message: "\(error)"))
            return 1
        }
    }

    /// The result as indented JSON.
    public static func json(_ result: BenchResult) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(result), as: UTF8.self)
    }

    public static func writeJSON(_ result: BenchResult, to path: String) throws {
        do {
            try Data((try Self.json(result) + "\n").utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw BenchError(.output, "could not write \(path): \(error)")
        }
    }

    public static func writeHTML(_ result: BenchResult, to path: String) throws {
        do {
            try Data(HTMLReport.render(result).utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw BenchError(.output, "could not write \(path): \(error)")
        }
    }

    /// This process's executable (for spawning workers of the same binary).
    static func ownExecutable() -> String {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return path }
        return CommandLine.arguments[0]
    }
}

extension Bench {
    /// Writes a line to stderr (progress, warnings).
    public static func printToStandardError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
