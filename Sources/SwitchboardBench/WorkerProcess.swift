#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// A worker child process as the coordinator sees it: its stdin for
/// commands, and what it has reported on stdout (phases, latest progress,
/// result). Lines that are not JSON events are passed to stderr.
final class WorkerProcess: Sendable {
    struct Inbox: Sendable {
        var phases: Set<WorkerEvent.Phase> = []
        var progress = ProgressCounts()
        var result: WorkerEvent?
        var failure: String?
        /// The worker's stdout reached EOF.
        var exited = false
    }

    let name: String
    private let process: Process
    private let input: FileHandle
    private let inbox = NIOLockedValueBox(Inbox())
    private let writeLock = NIOLock()

    init(name: String, executable: String, configuration: BenchConfiguration) throws {
        self.name = name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["worker"]
        let stdin = Pipe()
        let stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.standardError
        self.process = process
        self.input = stdin.fileHandleForWriting
        try process.run()
        // a thread of its own reads the worker's stdout with blocking reads until EOF
        // (Foundation's readabilityHandler can miss the last lines or the EOF)
        let inbox = self.inbox
        let label = name
        let output = stdout.fileHandleForReading
        let reader = Thread {
            Self.readEvents(from: output.fileDescriptor, into: inbox, label: label)
            try? output.close()
        }
        reader.start()
        try self.send(WorkerCommand(kind: .start, configuration: configuration))
    }

    /// Reads JSON-line events until EOF (bounded: at most 1 GiB of output).
    private static func readEvents(from fd: Int32, into inbox: NIOLockedValueBox<Inbox>, label: String) {
        let decoder = JSONDecoder()
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        var total = 0
        while total < 1 << 30 {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            total += n
            pending.append(contentsOf: chunk[0..<n])
            var start = 0
            while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[start..<newline]
                start = newline + 1
                guard !line.isEmpty else { continue }
                guard let event = try? decoder.decode(WorkerEvent.self, from: Data(line)) else {
                    FileHandle.standardError.write(Data("[\(label)] ".utf8) + Data(line) + Data("\n".utf8))
                    continue
                }
                inbox.withLockedValue { box in
                    switch event.kind {
                    case .phase: if let phase = event.phase { box.phases.insert(phase) }
                    case .progress: if let progress = event.progress { box.progress = progress }
                    case .result: box.result = event
                    case .failure: box.failure = event.message ?? "failed"
                    }
                }
            }
            pending.removeFirst(start)
        }
        inbox.withLockedValue { $0.exited = true }
    }

    var pid: Int32 { self.process.processIdentifier }

    func send(_ command: WorkerCommand) throws {
        let data = try JSONEncoder().encode(command) + Data("\n".utf8)
        try self.writeLock.withLock {
            try self.input.write(contentsOf: data)
        }
    }

    /// Sends a command, ignoring a worker that already went away.
    func tell(_ kind: WorkerCommand.Kind) {
        try? self.send(WorkerCommand(kind: kind))
    }

    var state: Inbox { self.inbox.withLockedValue { $0 } }

    var isRunning: Bool { self.process.isRunning }

    /// Stops a worker that did not finish in time (SIGTERM to this child only).
    func terminate() {
        if self.process.isRunning { self.process.terminate() }
    }

    func waitForExit(until deadline: NIODeadline) async {
        while self.process.isRunning, NIODeadline.now() < deadline {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }
}
