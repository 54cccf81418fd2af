public import Foundation

/// A real Redis Cluster on loopback: `redis-server` processes with `--cluster-enabled yes`, each on a
/// free port in its own fresh temporary directory, joined by `redis-cli --cluster create`, stopped by
/// PID. Every query goes through `redis-cli` (one process per call, each bounded in time), so the
/// harness does not depend on the Redis client under test.
///
/// Node ports are at most 55000: each node also listens on its cluster bus port, port + 10000.
public final class RedisClusterProcess: @unchecked Sendable {
    /// Every node started (killed ones included), in the order given to `redis-cli --cluster create`.
    public private(set) var ports: [Int] = []
    private var processes: [Int: Process] = [:]
    private var nodeIDs: [Int: String] = [:]
    /// Slots a node served when `kill(port:)` took it down: `waitForFailover` looks for their new master.
    private var killedSlots: [Int: [ClosedRange<Int>]] = [:]
    private let directory: URL
    /// With certificates, every node speaks TLS only, to clients and on the cluster bus.
    private let tls: TestCertificates?
    /// `cluster-node-timeout`: short with replicas, so a failover test is quick; long without, where no
    /// failover can help and a node marked failed by loaded peers (missed pings for this long) would
    /// only take the cluster down mid-test.
    private let nodeTimeoutMilliseconds: Int

    /// `masters` (at least 3, as `redis-cli --cluster create` requires) with `replicasPerMaster` each.
    /// Returns once every node answers `cluster_state:ok`, all agree on the slot owners in CLUSTER SLOTS,
    /// and every master has its replicas listed there.
    /// With `tls`, every node listens for TLS only (clients and cluster bus) with the server
    /// certificate, and `url` is a `rediss+cluster://` URL trusting the test authority.
    public init(masters: Int = 3, replicasPerMaster: Int = 0, tls: TestCertificates? = nil) throws {
        self.tls = tls
        self.nodeTimeoutMilliseconds = replicasPerMaster > 0 ? 1_000 : 5_000
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("sb-redis-cluster-\(UUID().uuidString)")
        guard masters >= 3, replicasPerMaster >= 0 else {
            throw TestFailure("a Redis Cluster needs at least 3 masters (asked for \(masters), \(replicasPerMaster) replicas each)")
        }
        do {
            try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
            for _ in 0..<(masters * (1 + replicasPerMaster)) { try self.startNode() }
            let tlsArguments = tls.map { ["--tls", "--cacert", $0.caCertificate] } ?? []
            let create = try self.run(tlsArguments + ["--cluster", "create"] + self.ports.map { "127.0.0.1:\($0)" }
                + ["--cluster-replicas", "\(replicasPerMaster)", "--cluster-yes"], timeout: 30)
            guard create.status == 0, create.output.contains("All 16384 slots covered") else {
                throw TestFailure("redis-cli --cluster create failed (exit \(create.status)):\n\(create.output)\(create.error)")
            }
            var lastNudge = Date.distantPast
            _ = try self.waitForAgreement("the new cluster to be ready") { view in
                let owners = Set(view.map(\.master))
                guard owners.count == masters else { throw TestFailure("\(owners.count) masters serve slots, not \(masters)") }
                let lacking = Set(view.filter { $0.replicas.count < replicasPerMaster }.map(\.master))
                guard lacking.isEmpty else {
                    // CLUSTER SLOTS lists a replica only once its replication offset is not 0, which takes a
                    // write on its master: FLUSHALL is one, harmless on the new, empty cluster.
                    if Date().timeIntervalSince(lastNudge) > 0.5 {
                        lastNudge = Date()
                        for port in lacking { _ = try? self.cli(port: port, ["FLUSHALL"]) }
                    }
                    throw TestFailure("masters \(lacking.sorted()) list fewer than \(replicasPerMaster) replicas")
                }
            }
        } catch {
            self.stop()
            throw error
        }
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...`, every node as a seed.
    public var url: String {
        let nodes = self.ports.map { "127.0.0.1:\($0)" }.joined(separator: ",")
        guard let tls = self.tls else { return "redis+cluster://" + nodes }
        return "rediss+cluster://\(nodes)?ssl_ca_certs=\(tls.caCertificate)"
    }

    /// The ports of the masters serving slots now, from CLUSTER SLOTS on a live node (sorted; empty
    /// when no live node answers).
    public var masterPorts: [Int] { Set(((try? self.slotRanges()) ?? []).map(\.master)).sorted() }

    /// `redis-cli -e -h 127.0.0.1 -p PORT args...` (5 s at most): its output, trimmed. Throws on an error reply.
    @discardableResult
    public func redisCLI(port: Int, _ arguments: String...) throws -> String {
        try self.cli(port: port, arguments)
    }

    /// The port of the master serving `slot`, as a live node's CLUSTER SLOTS says.
    public func masterPort(forSlot slot: Int) throws -> Int {
        guard let range = try self.slotRanges().first(where: { $0.slots.contains(slot) }) else {
            throw TestFailure("no master serves slot \(slot)")
        }
        return range.master
    }

    /// CLUSTER KEYSLOT: the slot of `key` (of its `{hash tag}` when it has one).
    public func keySlot(_ key: String) throws -> Int {
        guard let port = self.livePorts().first else { throw TestFailure("no cluster node is running") }
        let reply = try self.cli(port: port, ["CLUSTER", "KEYSLOT", key])
        guard let slot = Int(reply) else { throw TestFailure("CLUSTER KEYSLOT \(key): \(reply)") }
        return slot
    }

    /// SIGKILL one node, as a crash would; the slots it served are remembered for `waitForFailover`.
    public func kill(port: Int) {
        guard let process = self.processes[port] else { return }
        if let view = try? self.slotRanges(excluding: port) {
            self.killedSlots[port] = view.filter { $0.master == port }.map(\.slots)
        }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.processes[port] = nil
    }

    /// Waits until a replica serves the slots of the dead master on `port` and every live node answers
    /// `cluster_state:ok` and agrees on it; returns the promoted replica's port. (Right after a kill the
    /// others still say ok for about node-timeout: the state alone does not show the failover.)
    public func waitForFailover(ofMasterPort port: Int, timeout: TimeInterval) throws -> Int {
        var slots = self.killedSlots[port] ?? []
        if slots.isEmpty { slots = try self.slotRanges(excluding: port).filter { $0.master == port }.map(\.slots) }
        guard let slot = slots.first?.lowerBound else { throw TestFailure("127.0.0.1:\(port) served no slots") }
        var promoted = 0
        _ = try self.waitForAgreement("a replica of 127.0.0.1:\(port) to take over", timeout: timeout, excluding: port) { view in
            guard !view.contains(where: { $0.master == port }) else { throw TestFailure("127.0.0.1:\(port) still serves slots") }
            guard let owner = view.first(where: { $0.slots.contains(slot) })?.master, self.isLive(owner) else {
                throw TestFailure("no live master serves slot \(slot)")
            }
            promoted = owner
        }
        return promoted
    }

    /// The whole documented slot migration: IMPORTING on the target, MIGRATING on the source, every key
    /// moved with MIGRATE in batches, then SETSLOT NODE on target, source and the other masters. Returns
    /// once every live node names `target` as the slot's master (so the next command gets MOVED).
    public func migrateSlot(_ slot: Int, from source: Int, to target: Int) throws {
        try self.beginMigration(slot, from: source, to: target)
        try self.moveKeys(slot: slot, from: source, to: target)
        try self.assignSlot(slot, to: target, source: source)
    }

    /// The first half, for ASK tests: the slot is IMPORTING on `target` and MIGRATING on `source`.
    public func beginMigration(_ slot: Int, from source: Int, to target: Int) throws {
        let sourceID = try self.nodeID(source), targetID = try self.nodeID(target)
        try self.cli(port: target, ["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID])
        try self.cli(port: source, ["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID])
    }

    /// MIGRATE one key from `source` to `target` (a key already gone is fine: NOKEY).
    public func migrateKey(_ key: String, from source: Int, to target: Int) throws {
        let reply = try self.cli(port: source, ["MIGRATE", "127.0.0.1", "\(target)", key, "0", "5000"])
        guard reply == "OK" || reply == "NOKEY" else { throw TestFailure("MIGRATE \(key) to \(target): \(reply)") }
    }

    /// The end of a migration: the keys left on the current owner move to `target` (SETSLOT NODE fails
    /// on a node that still holds keys of the slot), then SETSLOT NODE on `target` and every other master.
    public func finishMigration(_ slot: Int, to target: Int) throws {
        let source = try self.masterPort(forSlot: slot)
        if source != target { try self.moveKeys(slot: slot, from: source, to: target) }
        try self.assignSlot(slot, to: target, source: source)
    }

    /// SIGTERM to every node, SIGKILL to those still running 2 s later; removes the temporary directory.
    public func stop() {
        let running = Array(self.processes.values)
        for process in running where process.isRunning { process.terminate() }
        let deadline = Date().addingTimeInterval(2)
        while running.contains(where: \.isRunning), Date() < deadline { usleep(10_000) }
        for process in running {
            if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        self.processes = [:]
        try? FileManager.default.removeItem(at: self.directory)
    }

    deinit {
        for process in self.processes.values {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: self.directory)
    }

    // MARK: - Nodes

    /// One node on a free port <= 55000 whose bus port is free too; another port when it exits at start.
    /// (`--repl-diskless-sync-delay 0`: replicas sync at once instead of after the default 5 s.)
    private func startNode() throws {
        guard let executable = RedisServerProcess.executable else {
            throw TestFailure("redis-server is not installed (scripts/test.sh installs it with apt-get)")
        }
        var tried: [Int] = []
        for _ in 1...20 {
            let port = try RedisServerProcess.freePort()
            guard port <= 55000, !self.ports.contains(port), Self.canBind(port: port + 10000) else { continue }
            tried.append(port)
            let directory = self.directory.appendingPathComponent("\(port)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.currentDirectoryURL = directory
            var arguments = [
                "--port", "\(port)", "--dir", directory.path, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "\(self.nodeTimeoutMilliseconds)", "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
                "--daemonize", "no", "--loglevel", "warning", "--enable-debug-command", "local",
                "--repl-diskless-sync-delay", "0", "--logfile", directory.appendingPathComponent("redis.log").path,
            ]
            if let tls = self.tls {
                arguments[1] = "0"
                arguments += [
                    "--tls-port", "\(port)", "--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "no",
                    "--tls-cert-file", tls.serverCertificate, "--tls-key-file", tls.serverKey, "--tls-ca-cert-file", tls.caCertificate,
                ]
            }
            process.arguments = arguments
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Ready when the port accepts connections and the process still runs (the port is ours).
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning, Date() < deadline {
                if RedisServerProcess.canConnect(port: port) {
                    usleep(50_000)
                    if process.isRunning {
                        self.ports.append(port)
                        self.processes[port] = process
                        return
                    }
                }
                usleep(20_000)
            }
            if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            try? FileManager.default.removeItem(at: directory)
        }
        throw TestFailure("could not start a cluster node (ports tried: \(tried))")
    }

    private func isLive(_ port: Int) -> Bool { self.processes[port]?.isRunning == true }

    private func livePorts(excluding excluded: Int? = nil) -> [Int] { self.ports.filter { $0 != excluded && self.isLive($0) } }

    /// CLUSTER MYID, asked once per node.
    private func nodeID(_ port: Int) throws -> String {
        if let id = self.nodeIDs[port] { return id }
        let id = try self.cli(port: port, ["CLUSTER", "MYID"])
        self.nodeIDs[port] = id
        return id
    }

    /// Binds and closes at once: `freePort()` does not probe the cluster bus port.
    private static func canBind(port: Int) -> Bool {
        RedisServerProcess.withLoopbackSocket(port: port) { fd, address, length in bind(fd, address, length) == 0 }
    }

    // MARK: - Slots

    private struct SlotRange {
        var slots: ClosedRange<Int>
        var master: Int
        var replicas: [Int]
        var owner: [Int] { [self.slots.lowerBound, self.slots.upperBound, self.master] }
    }

    /// CLUSTER SLOTS of `port` (or of the first live node that answers), sorted by first slot.
    private func slotRanges(port: Int? = nil, excluding excluded: Int? = nil) throws -> [SlotRange] {
        guard let port else {
            var failure: any Error = TestFailure("no cluster node is running")
            for port in self.livePorts(excluding: excluded) {
                do { return try self.slotRanges(port: port) } catch { failure = error }
            }
            throw failure
        }
        let text = try self.cli(port: port, ["CLUSTER", "SLOTS"], json: true)
        func int(_ value: Any) -> Int? { (value as? Int) ?? (value as? NSNumber)?.intValue }
        guard let entries = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[Any]] else {
            throw TestFailure("127.0.0.1:\(port) CLUSTER SLOTS: \(text)")
        }
        return try entries.map { entry in
            // [first, last, [ip, port, id, metadata] of the master, then one per replica]
            let nodes = entry.dropFirst(2).compactMap { node in (node as? [Any]).flatMap { $0.count > 1 ? int($0[1]) : nil } }
            guard entry.count >= 3, let first = int(entry[0]), let last = int(entry[1]), first <= last, let master = nodes.first else {
                throw TestFailure("127.0.0.1:\(port) CLUSTER SLOTS entry: \(entry)")
            }
            return SlotRange(slots: first...last, master: master, replicas: Array(nodes.dropFirst()))
        }.sorted { $0.slots.lowerBound < $1.slots.lowerBound }
    }

    /// Makes the node on `port` announce `announced` as its client port (`cluster-announce-port`; its
    /// cluster bus stays where it is), so that clients reading the slot map reach it through
    /// whatever listens there (a test proxy). Returns once every live node lists it so.
    public func announce(port: Int, as announced: Int) throws {
        _ = try self.cli(port: port, ["CONFIG", "SET", "cluster-announce-bus-port", "\(port + 10_000)"])
        _ = try self.cli(port: port, ["CONFIG", "SET", "cluster-announce-port", "\(announced)"])
        _ = try self.waitForAgreement("127.0.0.1:\(port) to be announced as port \(announced)") { view in
            guard view.contains(where: { $0.master == announced }) else { throw TestFailure("port \(announced) not listed yet") }
        }
    }

    /// Polls (bounded) until every live node but `excluded` answers `cluster_state:ok` with every slot
    /// served, all list the same slot owners, and `accept` takes each node's view. Returns the view.
    private func waitForAgreement(_ what: String, timeout: TimeInterval = 20, excluding excluded: Int? = nil,
                                  _ accept: ([SlotRange]) throws -> Void) throws -> [SlotRange] {
        let deadline = Date().addingTimeInterval(timeout)
        var problem = "no live node"
        repeat {
            do {
                var agreed: [SlotRange]?
                for port in self.livePorts(excluding: excluded) {
                    let info = try self.cli(port: port, ["CLUSTER", "INFO"])
                    guard info.contains("cluster_state:ok"), info.contains("cluster_slots_ok:16384") else {
                        throw TestFailure("127.0.0.1:\(port) CLUSTER INFO: \(info.split(separator: "\n").prefix(3).joined(separator: ", "))")
                    }
                    let view = try self.slotRanges(port: port)
                    try accept(view)
                    if let agreed, agreed.map(\.owner) != view.map(\.owner) {
                        throw TestFailure("127.0.0.1:\(port) lists slot owners \(view.map(\.owner)), another node \(agreed.map(\.owner))")
                    }
                    agreed = agreed ?? view
                }
                if let agreed { return agreed }
            } catch {
                problem = "\(error)"
            }
            usleep(100_000)
        } while Date() < deadline
        throw TestFailure("timed out after \(timeout) s waiting for \(what); last: \(problem)")
    }

    /// CLUSTER GETKEYSINSLOT + MIGRATE ... KEYS in batches of 100, until the source holds none.
    private func moveKeys(slot: Int, from source: Int, to target: Int) throws {
        for _ in 0..<1000 {
            let keys = try self.cli(port: source, ["CLUSTER", "GETKEYSINSLOT", "\(slot)", "100"]).split(separator: "\n").map(String.init)
            if keys.isEmpty { return }
            let reply = try self.cli(port: source, ["MIGRATE", "127.0.0.1", "\(target)", "", "0", "5000", "KEYS"] + keys)
            guard reply == "OK" || reply == "NOKEY" else { throw TestFailure("MIGRATE slot \(slot) to \(target): \(reply)") }
        }
        throw TestFailure("slot \(slot) still has keys on 127.0.0.1:\(source) after 1000 batches")
    }

    /// CLUSTER SETSLOT NODE on the target, then the source, then the other masters (the documented
    /// order); returns once every live node names the target.
    private func assignSlot(_ slot: Int, to target: Int, source: Int) throws {
        let targetID = try self.nodeID(target)
        var order = [target]
        for port in [source] + self.masterPorts where !order.contains(port) && self.isLive(port) { order.append(port) }
        for port in order { try self.cli(port: port, ["CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID]) }
        _ = try self.waitForAgreement("slot \(slot) to move to 127.0.0.1:\(target)", timeout: 10) { view in
            guard view.first(where: { $0.slots.contains(slot) })?.master == target else {
                throw TestFailure("slot \(slot) not yet on 127.0.0.1:\(target)")
            }
        }
    }

    // MARK: - redis-cli

    /// One command on one node; `-e` makes an error reply a non-zero exit (its text on stderr).
    @discardableResult
    private func cli(port: Int, _ arguments: [String], json: Bool = false, timeout: TimeInterval = 5) throws -> String {
        var command = ["-e"]
        if let tls = self.tls { command += ["--tls", "--cacert", tls.caCertificate] }
        if json { command += ["-2", "--json"] }
        command += ["-h", "127.0.0.1", "-p", "\(port)"] + arguments
        let result = try self.run(command, timeout: timeout)
        guard result.status == 0 else {
            let message = (result.error + result.output).trimmingCharacters(in: .whitespacesAndNewlines)
            throw TestFailure("redis-cli -p \(port) \(arguments.joined(separator: " ")): \(message) (exit \(result.status))")
        }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs redis-cli with its output in files (no pipe to fill up); SIGKILL after `timeout`.
    private func run(_ arguments: [String], timeout: TimeInterval) throws -> (status: Int32, output: String, error: String) {
        let base = self.directory.appendingPathComponent("cli-\(UUID().uuidString)")
        let outURL = base.appendingPathExtension("out"), errURL = base.appendingPathExtension("err")
        defer { for url in [outURL, errURL] { try? FileManager.default.removeItem(at: url) } }
        guard FileManager.default.createFile(atPath: outURL.path, contents: nil),
              FileManager.default.createFile(atPath: errURL.path, contents: nil) else {
            throw TestFailure("cannot create files in \(self.directory.path)")
        }
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        defer { try? out.close(); try? err.close() }
        let process = Process()
        // redis-cli sits next to redis-server (/usr/bin from Debian's package).
        process.executableURL = URL(fileURLWithPath: RedisServerProcess.executable ?? "/usr/bin/redis-server")
            .deletingLastPathComponent().appendingPathComponent("redis-cli")
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(2_000) }
        if process.isRunning {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw TestFailure("redis-cli \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
        }
        process.waitUntilExit()
        let read = { (url: URL) in (try? String(contentsOf: url, encoding: .utf8)) ?? "" }
        return (process.terminationStatus, read(outURL), read(errURL))
    }
}
