import Foundation
import NIOCore
import NIOPosix

/// A real `redis-server` on a free loopback port, stopped by PID.
public final class RedisServerProcess: @unchecked Sendable {
    public private(set) var port: Int
    private var process: Process?
    /// Server certificate, key and the authority for client certificates: with them Redis listens
    /// for TLS only (`--port 0 --tls-port`), and asks clients for certificates when `requireClientCertificates`.
    private let tls: (certificates: TestCertificates, requireClientCertificates: Bool)?

    /// Starts on a free port; if another process took the port first (suites run in parallel), tries another.
    public init(tls: TestCertificates? = nil, requireClientCertificates: Bool = false) throws {
        self.tls = tls.map { ($0, requireClientCertificates) }
        self.port = try Self.freePort()
        for attempt in 1...5 {
            do {
                try self.start()
                return
            } catch let error as TestFailure where error.portTaken && attempt < 5 {
                self.port = try Self.freePort()
            }
        }
    }

    public static func freePort() throws -> Int {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let channel = try ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress!.port!
        try channel.close().wait()
        return port
    }

    public static var executable: String? {
        for path in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        return nil
    }

    public func start() throws {
        guard let executable = Self.executable else {
            throw TestFailure("redis-server is not installed (scripts/test.sh installs it with apt-get)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        var arguments = [
            "--port", "\(self.port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning", "--enable-debug-command", "local",
        ]
        if let (certificates, requireClientCertificates) = self.tls {
            arguments[1] = "0"
            arguments += [
                "--tls-port", "\(self.port)", "--tls-cert-file", certificates.serverCertificate,
                "--tls-key-file", certificates.serverKey, "--tls-ca-cert-file", certificates.caCertificate,
                "--tls-auth-clients", requireClientCertificates ? "yes" : "no",
            ]
        }
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        // Ready when the port accepts connections.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if !process.isRunning {
                self.process = nil
                throw TestFailure("redis-server exited at start (port \(self.port) taken?)", portTaken: true)
            }
            if Self.canConnect(port: self.port) {
                // Someone else may be listening there: make sure it is still ours.
                usleep(50_000)
                if process.isRunning { return }
            }
            usleep(20_000)
        }
        throw TestFailure("redis-server did not start on port \(self.port)")
    }

    public static func canConnect(port: Int) -> Bool {
        self.withLoopbackSocket(port: port) { fd, address, length in connect(fd, address, length) == 0 }
    }

    /// Runs `body` with a new TCP socket and the address 127.0.0.1:`port` (false when no socket
    /// can be made); the socket is closed after.
    static func withLoopbackSocket(port: Int, _ body: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Bool) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }

    /// SIGSTOP: Redis stays connected and answers nothing (a stalled server). Undo with `resume()`;
    /// `kill()` and `stop()` resume it first.
    public func pause() {
        guard let process = self.process else { return }
        Foundation.kill(process.processIdentifier, SIGSTOP)
    }

    /// SIGCONT after `pause()`.
    public func resume() {
        guard let process = self.process else { return }
        Foundation.kill(process.processIdentifier, SIGCONT)
    }

    /// SIGKILL, as a crash would.
    public func kill() {
        guard let process = self.process else { return }
        Foundation.kill(process.processIdentifier, SIGCONT)
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    /// SIGTERM, then SIGKILL if it is still running after 2 s (a child started from the test
    /// runner may inherit a mask that blocks SIGTERM; waiting unbounded would hang the run).
    public func stop() {
        guard let process = self.process else { return }
        Foundation.kill(process.processIdentifier, SIGCONT)
        process.terminate()
        let deadline = Date().addingTimeInterval(2)
        while process.isRunning, Date() < deadline { usleep(10_000) }
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        self.process = nil
    }

    deinit {
        self.kill()
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public var portTaken = false
    public init(_ description: String, portTaken: Bool = false) {
        self.description = description
        self.portTaken = portTaken
    }
}
