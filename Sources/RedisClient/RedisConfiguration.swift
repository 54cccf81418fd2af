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
    /// TLS (`rediss://`): designed for, not built yet; a configuration asking for it is refused at connect.
    public var useTLS: Bool
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

    /// Parses `redis://[[user]:password@]host[:port][/db]` (and `rediss://` for TLS).
    public init(url: String) throws(RedisError) {
        self.init()
        var rest = Substring(url)
        if rest.hasPrefix("redis://") {
            rest = rest.dropFirst("redis://".count)
        } else if rest.hasPrefix("rediss://") {
            rest = rest.dropFirst("rediss://".count)
            self.useTLS = true
        } else {
            throw RedisError(.invalidConfiguration, "a Redis URL starts with redis:// or rediss://")
        }
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
                self.database = index
            }
        }
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            self.host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let port = Int(rest.dropFirst()), (1...65535).contains(port) else { throw RedisError(.invalidConfiguration, "bad port in \(url)") }
                self.port = port
            }
        } else if let colon = rest.lastIndex(of: ":") {
            self.host = String(rest[..<colon])
            guard let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else {
                throw RedisError(.invalidConfiguration, "bad port in \(url)")
            }
            self.port = port
        } else if !rest.isEmpty {
            self.host = String(rest)
        }
        guard !self.host.isEmpty else { throw RedisError(.invalidConfiguration, "no host in \(url)") }
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
