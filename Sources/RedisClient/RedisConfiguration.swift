public import NIOCore

/// Where and how to reach a Redis server.
public struct RedisConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    /// Database index (`SELECT`); Redis Cluster only has 0.
    public var database: Int
    /// ACL user name for `AUTH`; nil uses the default user.
    public var username: String?
    /// Password for `AUTH`; nil sends no `AUTH`.
    public var password: String?
    /// Speak RESP3 (`HELLO 3`) instead of RESP2.
    public var useRESP3: Bool
    /// TLS (`rediss://`), at least TLS 1.2, with the server's certificate verified against
    /// `tlsCAFile` (or the system's roots) and its name or IP address checked against `host`.
    public var useTLS: Bool
    /// PEM file of the certificate authorities trusted for the server (`ssl_ca_certs` in the URL);
    /// nil trusts the system's roots.
    public var tlsCAFile: String?
    /// PEM certificate chain and private key presented to the server, for Redis's
    /// `tls-auth-clients yes` (`ssl_certfile` and `ssl_keyfile` in the URL).
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?
    /// How long a command may wait for its reply before the connection is considered broken.
    public var commandTimeout: TimeAmount
    /// How long a TCP connect may take.
    public var connectTimeout: TimeAmount
    /// First delay before a reconnect; doubled per failure up to `maximumBackoff`, with full jitter.
    public var initialBackoff: TimeAmount
    public var maximumBackoff: TimeAmount
    /// Most commands sent and not yet answered (queued, written, or awaiting a reply) per client;
    /// past it commands fail at once with `RedisError.overloaded` (retryable) instead of queueing
    /// without bound while Redis is slow or stalled. Default 10,000.
    public var maximumPendingCommands: Int
    /// Most bytes of such commands per client (a single larger command is still sent when nothing
    /// else is pending). Default 64 MiB.
    public var maximumPendingBytes: Int
    /// The nodes of a Redis Cluster to start from (`redis+cluster://`), `host` and `port` being the
    /// first; empty for a single server. The client learns the rest of the cluster from them
    /// (`CLUSTER SLOTS`); list several, so that a node can start while one of them is down.
    public var clusterNodes: [RedisNodeAddress] = []

    /// Whether this names a Redis Cluster.
    public var isCluster: Bool { !self.clusterNodes.isEmpty }

    /// The same settings (credentials, TLS, timeouts, limits) for the server at `address`.
    public func node(_ address: RedisNodeAddress) -> RedisConfiguration {
        var configuration = self
        configuration.host = address.host
        configuration.port = address.port
        return configuration
    }

    public init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        database: Int = 0,
        username: String? = nil,
        password: String? = nil,
        useRESP3: Bool = false,
        useTLS: Bool = false,
        commandTimeout: TimeAmount = .seconds(5),
        connectTimeout: TimeAmount = .seconds(3),
        initialBackoff: TimeAmount = .milliseconds(50),
        maximumBackoff: TimeAmount = .seconds(2),
        maximumPendingCommands: Int = 10_000,
        maximumPendingBytes: Int = 64 * 1024 * 1024
    ) {
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
        self.useRESP3 = useRESP3
        self.useTLS = useTLS
        self.commandTimeout = commandTimeout
        self.connectTimeout = connectTimeout
        self.initialBackoff = initialBackoff
        self.maximumBackoff = maximumBackoff
        self.maximumPendingCommands = maximumPendingCommands
        self.maximumPendingBytes = maximumPendingBytes
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]`, and `rediss://` for TLS with the
    /// optional query parameters `ssl_ca_certs`, `ssl_certfile` and `ssl_keyfile` (file paths,
    /// named as redis-py names them). There is no switch that turns certificate checks off.
    ///
    /// A Redis Cluster is `redis+cluster://[[user]:password@]host[:port][,host[:port]...]` (or
    /// `rediss+cluster://`): the nodes to start from, every node sharing the credentials and TLS
    /// settings; no database index (a cluster has only 0).
    public init(url: String) throws(RedisError) {
        self.init()
        var rest = Substring(url)
        if let question = rest.firstIndex(of: "?") {
            let query = rest[rest.index(after: question)...]
            rest = rest[..<question]
            for pair in query.split(separator: "&") where !pair.isEmpty {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let value = parts.count == 2 ? String(parts[1]).removingPercentEscapes : ""
                guard !value.isEmpty else { throw RedisError(.invalidConfiguration, "empty value for \(parts[0]) in the Redis URL") }
                switch parts[0] {
                case "ssl_ca_certs": self.tlsCAFile = value
                case "ssl_certfile": self.tlsCertificateFile = value
                case "ssl_keyfile": self.tlsKeyFile = value
                default: throw RedisError(.invalidConfiguration, "unknown Redis URL parameter \(parts[0]) (known: ssl_ca_certs, ssl_certfile, ssl_keyfile)")
                }
            }
        }
        let schemes = [("redis://", false, false), ("rediss://", true, false), ("redis+cluster://", false, true), ("rediss+cluster://", true, true)]
        guard let (scheme, tls, cluster) = schemes.first(where: { rest.hasPrefix($0.0) }) else {
            throw RedisError(.invalidConfiguration, "a Redis URL starts with redis://, rediss://, redis+cluster:// or rediss+cluster://")
        }
        rest = rest.dropFirst(scheme.count)
        self.useTLS = tls
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = credentials[..<colon]
                self.username = user.isEmpty ? nil : String(user).removingPercentEscapes
                self.password = String(credentials[credentials.index(after: colon)...]).removingPercentEscapes
            } else {
                self.password = String(credentials).removingPercentEscapes
            }
        }
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let index = Int(db), index >= 0 else { throw RedisError(.invalidConfiguration, "bad database index in \(url)") }
                guard !cluster || index == 0 else { throw RedisError(.invalidConfiguration, "a Redis Cluster has only database 0 (\(url))") }
                self.database = index
            }
        }
        if cluster {
            let hosts = rest.split(separator: ",", omittingEmptySubsequences: false)
            guard hosts.count <= 64 else { throw RedisError(.invalidConfiguration, "more than 64 Redis Cluster nodes in \(url)") }
            for host in hosts {
                guard !host.isEmpty else { throw RedisError(.invalidConfiguration, "an empty Redis Cluster node in \(url)") }
                let address = try Self.address(host, defaultPort: 6379, url: url)
                if !self.clusterNodes.contains(address) { self.clusterNodes.append(address) }
            }
            self.host = self.clusterNodes[0].host
            self.port = self.clusterNodes[0].port
        } else {
            let address = try Self.address(rest, defaultPort: 6379, url: url)
            self.host = address.host
            self.port = address.port
        }
        let usesTLSFiles = self.tlsCAFile != nil || self.tlsCertificateFile != nil || self.tlsKeyFile != nil
        guard self.useTLS || !usesTLSFiles else {
            throw RedisError(.invalidConfiguration, "ssl_* parameters need a rediss:// URL")
        }
        guard (self.tlsCertificateFile == nil) == (self.tlsKeyFile == nil) else {
            throw RedisError(.invalidConfiguration, "ssl_certfile and ssl_keyfile go together")
        }
    }

    /// `host`, `host:port`, `[v6]` or `[v6]:port` of a URL; an empty host is 127.0.0.1 for a single
    /// server (as redis-cli takes it) and an error in a list of cluster nodes.
    private static func address(_ text: Substring, defaultPort: Int, url: String) throws(RedisError) -> RedisNodeAddress {
        var rest = text
        var host = "127.0.0.1"
        var port = defaultPort
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let value = Int(rest.dropFirst()), (1...65535).contains(value) else { throw RedisError(.invalidConfiguration, "bad port in \(url)") }
                port = value
            } else if !rest.isEmpty {
                throw RedisError(.invalidConfiguration, "bad host in \(url)")
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let value = Int(rest[rest.index(after: colon)...]), (1...65535).contains(value) else {
                throw RedisError(.invalidConfiguration, "bad port in \(url)")
            }
            port = value
        } else if !rest.isEmpty {
            host = String(rest)
        }
        guard !host.isEmpty else { throw RedisError(.invalidConfiguration, "no host in \(url)") }
        return RedisNodeAddress(host: host, port: port)
    }
}

extension String {
    fileprivate var removingPercentEscapes: String {
        var bytes: [UInt8] = []
        var iterator = Array(self.utf8).makeIterator()
        while let b = iterator.next() {
            if b == UInt8(ascii: "%"), let h = iterator.next(), let l = iterator.next(),
                let value = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension RedisConfiguration {
    /// Loads the TLS files of a `rediss://` configuration now, so that a missing or bad file is
    /// reported at startup rather than at the first connect. Does nothing without TLS.
    public func checkTLSFiles() throws(RedisError) {
        guard self.useTLS else { return }
        _ = try RedisConnector.makeTLSContext(self)
    }
}
