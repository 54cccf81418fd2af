public import Foundation

/// A throwaway certificate authority and a server certificate it signed for 127.0.0.1 and
/// localhost (and a client certificate for mutual TLS), made with the openssl CLI in a fresh
/// temporary directory that `remove()` deletes.
public struct TestCertificates: Sendable {
    public let directory: URL
    public var caCertificate: String { self.directory.appendingPathComponent("ca.pem").path }
    public var serverCertificate: String { self.directory.appendingPathComponent("server.pem").path }
    public var serverKey: String { self.directory.appendingPathComponent("server.key").path }
    public var clientCertificate: String { self.directory.appendingPathComponent("client.pem").path }
    public var clientKey: String { self.directory.appendingPathComponent("client.key").path }
    /// A second authority that signed nothing here: trusting only it must fail verification.
    public var otherCACertificate: String { self.directory.appendingPathComponent("other-ca.pem").path }

    public init() throws {
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("sb-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        do {
            for ca in ["ca", "other-ca"] {
                try self.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                  "-keyout", "\(ca).key", "-out", "\(ca).pem", "-days", "2", "-subj", "/CN=switchboard test \(ca)"])
            }
            try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(
                to: self.directory.appendingPathComponent("san.ext"), atomically: true, encoding: .utf8)
            for leaf in ["server", "client"] {
                try self.openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                  "-keyout", "\(leaf).key", "-out", "\(leaf).csr", "-subj", "/CN=\(leaf)"])
                try self.openssl(["x509", "-req", "-in", "\(leaf).csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                                  "-out", "\(leaf).pem", "-days", "2", "-extfile", "san.ext"])
            }
        } catch {
            self.remove()
            throw error
        }
    }

    public func remove() {
        try? FileManager.default.removeItem(at: self.directory)
    }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.currentDirectoryURL = self.directory
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestFailure("openssl \(arguments.prefix(2).joined(separator: " ")) failed (scripts/test.sh installs openssl)")
        }
    }
}
