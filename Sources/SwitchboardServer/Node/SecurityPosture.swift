import Logging
import NIOHTTP1
import SwitchboardCore

/// How loudly a node says it is insecure, and when it refuses to start.
///
/// With no token key a node runs in dev mode: anonymous connect, every channel open. That is fine
/// on a laptop and dangerous anywhere else, so it prints a banner, shows `"insecure": true` in
/// `/api/info`, and refuses to bind an address other than loopback unless `--insecure` is given.
enum SecurityPosture {
    /// Whether `host` is a loopback address (or `localhost`).
    static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" || host == "[::1]" { return true }
        return host.hasPrefix("127.") && host.split(separator: ".").count == 4
    }

    /// Refuses dev mode on a non-loopback address without `insecure`.
    static func check(_ configuration: ServerConfiguration) throws {
        guard !configuration.hasTokenKeys, !configuration.insecure, !Self.isLoopback(configuration.host) else { return }
        throw ConfigurationError(
            "no token key is configured (insecure dev mode: anyone may connect and use any channel) and the node would listen on "
                + "\(configuration.host), which is not loopback. Configure tokens (--token-secret-file, tokens.hmac, tokens.publicKeys, "
                + "tokens.jwks), or pass --insecure to run open on purpose."
        )
    }

    /// The banner and warnings printed at start.
    static func announce(_ configuration: ServerConfiguration, logger: Logger) {
        if !configuration.hasTokenKeys {
            let banner = """

                ************************************************************************
                *  INSECURE: no token key is configured. This node runs in dev mode:   *
                *  anyone may connect and subscribe, publish and read any channel.     *
                *  Configure tokens (see docs/security.md) before exposing it.         *
                ************************************************************************
                """
            logger.warning("\(banner)")
        }
        if OriginPolicy(configuration.allowedOrigins).admitsEveryOrigin {
            logger.warning("allowedOrigins contains *: pages on any site may connect to this node with their users' tokens")
        }
    }
}

extension NodeContext {
    /// Whether a request's `Origin` may use the client transports (`allowedOrigins`).
    func admitsOrigin(_ head: HTTPRequestHead) -> Bool {
        let origins = head.headers[canonicalForm: "origin"]
        guard origins.count <= 1 else { return false }
        return self.origins.admits(origin: origins.first.map(String.init), host: head.headers.first(name: "host"))
    }

    /// CORS headers for a client transport's answer: only for an admitted `Origin`.
    func corsHeaders(_ head: HTTPRequestHead) -> [(String, String)] {
        guard let origin = head.headers.first(name: "origin"), self.admitsOrigin(head) else { return [] }
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]
    }

    /// Whether the node runs without token keys (dev mode).
    var isInsecure: Bool { !self.enforcesPermissions }
}

extension Route {
    /// The routes browser pages use to talk to the node, held to `allowedOrigins`.
    var isClientTransport: Bool {
        switch self {
        case .webSocket, .eventStream, .poll, .rpc: true
        default: false
        }
    }
}
