import NIOConcurrencyHelpers
import NIOCore

/// Runs a scenario over several worker processes of the same executable
/// (`switchboard-bench worker`), each with its share of the connections
/// and its own block of source addresses, and merges their results
/// (counters add, histograms merge exactly).
///
/// Phases over the JSON-line pipes:
/// - connect/idle: workers open their connections and report `connected`;
///   the coordinator holds, samples the servers, then says `go` (close and report).
/// - fanout: subscriber workers report `subscribed`; then a publisher worker
///   starts and warms up until every subscriber worker is `ready`; `go` starts
///   the measured publications; when the publisher reports `published`,
///   the subscribers are told, and stop after the idle time.
struct ProcessCoordinator {
    let configuration: BenchConfiguration
    let executable: String
    let progressSink: (@Sendable (String) -> Void)?

    func run() async throws -> BenchResult {
        let c = self.configuration
        let procs = c.processCount
        let epoch = WallClock.nanoseconds()
        let start = NIODeadline.now()
        let deadline = start + .milliseconds(Int64(c.timeout * 1000))
        let hardDeadline = deadline + .seconds(30)
        var watch = ServerProcessWatch(pids: c.serverPIDs)
        var notes: [String] = []
        var timedOut = false
        guard let first = IPv4.value(c.sourceAddress) else {
            throw BenchError(.invalidConfiguration, "bad --src \(c.sourceAddress)")
        }

        func spawn(_ name: String, role: WorkerAssignment.Role, slot: Int, connections: Int, base: Int) throws -> WorkerProcess {
            var worker = c
            worker.connections = connections
            worker.connectRate = c.connectRate / Double(procs)
            worker.sourceAddress = IPv4.text(first + UInt32(slot * c.sourceAddressCount))
            worker.processes = .fixed(1)
            worker.serverPIDs = []
            worker.worker = WorkerAssignment(
                role: role, indexBase: base, seriesEpochNanoseconds: epoch, processIndex: slot, totalConnections: c.connections
            )
            do {
                return try WorkerProcess(name: name, executable: self.executable, configuration: worker)
            } catch {
                throw BenchError(.worker, "could not start \(name) (\(self.executable) worker): \(error)")
            }
        }

        var workers: [WorkerProcess] = []
        var main: [WorkerProcess] = []
        let role: WorkerAssignment.Role = c.scenario.publishes ? .subscribers : .all
        var base = 0
        do {
            for k in 0..<procs {
                let n = c.connections / procs + (k < c.connections % procs ? 1 : 0)
                let worker = try spawn("worker \(k)", role: role, slot: k, connections: n, base: base)
                workers.append(worker)
                main.append(worker)
                base += n
            }
        } catch {
            for worker in workers { worker.terminate() }
            throw error
        }

        let reporter = ProgressReporter(scenario: c.scenario)
        reporter.expect(connections: Int64(c.connections), publications: c.scenario.publishes ? Int64(c.messages) : 0)
        if c.scenario.publishes {
            let channels = c.channelCount
            let expected = (0..<min(channels, c.connections)).reduce(Int64(0)) { sum, channel in
                let subscribers = c.connections / channels + (channel < c.connections % channels ? 1 : 0)
                return sum + Int64(subscribers) * BenchRunner.messages(for: channel, messages: c.messages, channels: channels)
            }
            reporter.expect(deliveries: expected)
        }
        let everyone = WorkerRoster(workers)
        let progressTask = self.progressSink.map { sink in
            reporter.run(source: { everyone.all.reduce(ProgressCounts()) { $0 + $1.state.progress } }, sink: { _, line in sink(line) })
        }

        /// Waits until every worker in `group` reported `phase`; false on timeout or a worker exiting first.
        func awaitPhase(_ phase: WorkerEvent.Phase, from group: [WorkerProcess]) async -> Bool {
            while NIODeadline.now() < deadline {
                var all = true
                for worker in group {
                    let state = worker.state
                    if state.phases.contains(phase) { continue }
                    if state.exited || state.failure != nil || !worker.isRunning {
                        notes.append("\(worker.name) ended before reporting \(phase.rawValue)\(state.failure.map { ": \($0)" } ?? "")")
                        return false
                    }
                    all = false
                }
                if all { return true }
                try? await Task.sleep(nanoseconds: 20_000_000)
            }
            timedOut = true
            notes.append("the run hit --timeout waiting for \(phase.rawValue)")
            return false
        }

        func sleep(_ seconds: Double) async {
            let until = min(deadline, .now() + .milliseconds(Int64(seconds * 1000)))
            while NIODeadline.now() < until { try? await Task.sleep(nanoseconds: 50_000_000) }
        }

        var ok = true
        switch c.scenario {
        case .pingpong:
            // refused by `validated()`: pingpong runs in one process
            for worker in main { worker.tell(.stop) }
        case .connect, .idle:
            reporter.set(phase: "connecting")
            ok = await awaitPhase(.connected, from: main)
            watch.sampleOpen()
            if ok {
                reporter.set(phase: c.scenario == .idle ? "settling" : "holding")
                await sleep(c.hold)
                if c.scenario == .idle { watch.sampleOpen() }
            }
            watch.sampleEnd()
            reporter.set(phase: "closing")
            for worker in main { worker.tell(ok ? .go : .stop) }
        case .fanout, .latency, .crossNode:
            reporter.set(phase: "connecting")
            ok = await awaitPhase(.subscribed, from: main)
            watch.sampleOpen()
            var publisher: WorkerProcess?
            if ok {
                do {
                    let p = try spawn("publisher", role: .publishers, slot: procs, connections: 0, base: 0)
                    publisher = p
                    workers.append(p)
                    everyone.set(workers)
                } catch {
                    notes.append("\(error)")
                    ok = false
                }
            }
            if ok {
                reporter.set(phase: "warm-up")
                ok = await awaitPhase(.ready, from: main)
            }
            if ok, let publisher {
                watch.startCPU()
                reporter.set(phase: "measuring")
                publisher.tell(.go)
                for worker in main { worker.tell(.go) }
                _ = await awaitPhase(.published, from: [publisher])
                for worker in main { worker.tell(.published) }
            } else {
                for worker in workers { worker.tell(.stop) }
            }
        }

        // collect
        var total = BenchCounters(seriesEpochNanoseconds: epoch)
        for worker in workers {
            var exitedAt: NIODeadline?
            while worker.state.result == nil, !worker.state.exited, NIODeadline.now() < hardDeadline {
                // a worker that exited gets 2 s for its last lines to be read
                if !worker.isRunning {
                    if let exitedAt, NIODeadline.now() - exitedAt > .seconds(2) { break }
                    if exitedAt == nil { exitedAt = .now() }
                }
                try? await Task.sleep(nanoseconds: 20_000_000)
            }
            if worker.state.result == nil, worker.isRunning {
                worker.tell(.stop)
                await worker.waitForExit(until: min(hardDeadline, .now() + .seconds(5)))
            }
            await worker.waitForExit(until: min(hardDeadline, .now() + .seconds(10)))
            if worker.isRunning {
                notes.append("\(worker.name) (pid \(worker.pid)) did not exit: terminated")
                worker.terminate()
            }
            let state = worker.state
            guard let result = state.result, let counters = result.counters else {
                notes.append("\(worker.name) gave no result\(state.failure.map { ": \($0)" } ?? "")")
                continue
            }
            total.merge(counters)
            if result.timedOut == true { timedOut = true }
            for note in result.notes ?? [] where !notes.contains(note) { notes.append(note) }
        }
        if c.scenario.publishes { watch.sampleEnd() }
        if c.scenario == .idle, !watch.isEmpty {
            await sleep(1)
            watch.sampleAfterClose()
        }
        progressTask?.cancel()
        let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        return BenchResult(
            configuration: c,
            counters: total,
            servers: watch.samples,
            processes: workers.count,
            threads: c.threads > 0 ? c.threads : System.coreCount,
            startedAt: epoch,
            elapsedSeconds: elapsed,
            timedOut: timedOut,
            notes: notes
        )
    }
}
