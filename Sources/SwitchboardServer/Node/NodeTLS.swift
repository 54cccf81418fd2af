import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The node's TLS server context (`--tls-cert`, `--tls-key`): TLS 1.2 and 1.3 only (NIOSSL's default
/// minimum is 1.0), ALPN `http/1.1`. Read by every accepted connection, replaced by `reload()`
/// (SIGHUP) so a renewed certificate is used by new connections while open ones keep theirs.
final class NodeTLS: Sendable {
    private let certificateFile: String
    private let keyFile: String
    private let context: NIOLockedValueBox<NIOSSLContext>

    /// Nil when the configuration names no certificate; throws when only one of the two files is
    /// named, or they cannot be used (with the file named).
    init?(configuration: ServerConfiguration) throws {
        switch (configuration.tlsCertificateFile, configuration.tlsKeyFile) {
        case (nil, nil):
            return nil
        case (let certificate?, let key?):
            self.certificateFile = certificate
            self.keyFile = key
            self.context = NIOLockedValueBox(try Self.makeContext(certificateFile: certificate, keyFile: key))
        default:
            throw ConfigurationError("--tls-cert and --tls-key go together")
        }
    }

    /// The handler for a new connection, with the current context.
    func makeHandler() -> NIOSSLServerHandler {
        NIOSSLServerHandler(context: self.context.withLockedValue { $0 })
    }

    /// Reads the certificate and key again; on failure the current ones stay and the error says why.
    func reload() throws {
        let context = try Self.makeContext(certificateFile: self.certificateFile, keyFile: self.keyFile)
        self.context.withLockedValue { $0 = context }
    }

    static func makeContext(certificateFile: String, keyFile: String) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
        } catch {
            throw ConfigurationError("--tls-cert \(certificateFile): cannot read a PEM certificate (\(error))")
        }
        guard !chain.isEmpty else { throw ConfigurationError("--tls-cert \(certificateFile): no certificate in it") }
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw ConfigurationError("--tls-key \(keyFile): cannot read a PEM private key (\(error))")
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        tls.applicationProtocols = ["http/1.1"]
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw ConfigurationError("--tls-cert/--tls-key: the certificate and key do not make a TLS context (\(error))")
        }
    }
}
