import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// A worker process's side of the coordination pipe: reads commands from
/// stdin on a thread of its own, writes events to stdout, one JSON line each.
/// Nothing else may be written to stdout in a worker (logs go to stderr).
final class WorkerLink: Sendable {
    private struct Inbox {
        var received: Set<WorkerCommand.Kind> = []
        var closed = false
    }

    private let inbox = NIOLockedValueBox(Inbox())
    private let output = NIOLock()

    /// Reads the first line (the configuration) from stdin.
    static func readStart() throws -> BenchConfiguration {
        guard let line = readLine(strippingNewline: true) else {
            throw BenchError(.worker, "worker: no configuration on stdin")
        }
        let command = try JSONDecoder().decode(WorkerCommand.self, from: Data(line.utf8))
        guard command.kind == .start, let configuration = command.configuration else {
            throw BenchError(.worker, "worker: the first line must be a start command")
        }
        return configuration
    }

    /// Starts the stdin reader; EOF (the coordinator went away) counts as `stop`.
    func startReading() {
        let inbox = self.inbox
        let thread = Thread {
            let decoder = JSONDecoder()
            for _ in 0..<1_000_000 {
                guard let line = readLine(strippingNewline: true) else { break }
                if let command = try? decoder.decode(WorkerCommand.self, from: Data(line.utf8)) {
                    inbox.withLockedValue { _ = $0.received.insert(command.kind) }
                }
            }
            inbox.withLockedValue {
                $0.closed = true
                $0.received.insert(.stop)
            }
        }
        thread.start()
    }

    func emit(_ event: WorkerEvent) {
        guard let data = try? JSONEncoder().encode(event) else { return }
        self.output.withLock {
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        }
    }

    func emit(phase: WorkerEvent.Phase) {
        self.emit(WorkerEvent(kind: .phase, phase: phase))
    }

    func has(_ kind: WorkerCommand.Kind) -> Bool {
        self.inbox.withLockedValue { $0.received.contains(kind) }
    }

    var stopRequested: Bool { self.has(.stop) }

    /// Waits for a command (or stop) until the deadline; true if it came.
    func wait(for kind: WorkerCommand.Kind, until deadline: NIODeadline) async -> Bool {
        while NIODeadline.now() < deadline {
            if self.has(kind) { return true }
            if self.stopRequested { return false }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return self.has(kind)
    }
}
