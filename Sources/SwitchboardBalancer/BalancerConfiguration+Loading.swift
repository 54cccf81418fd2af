public import SwitchboardCore
import NIOCore

extension BalancerConfiguration {
    /// The prefix of environment variables that set `balance` options (`SWITCHBOARD_BALANCE_LISTEN`).
    public static let environmentPrefix = "SWITCHBOARD_BALANCE_"

    /// Option names (config file keys), each also settable as `SWITCHBOARD_BALANCE_<UPPER_SNAKE>`.
    public static let optionKeys = [
        "listen", "nodes", "registry", "algorithm", "hashKey", "hashBalanceFactor", "admin", "tlsCert", "tlsKey",
        "maxConnections", "headerTimeout", "connectTimeout", "responseTimeout", "tunnelIdleTimeout", "checkInterval", "checkTimeout",
        "rise", "fall", "drainSeconds", "logLevel", "threads", "forwardClientAddress", "checkWebSocket", "rebalanceSpread",
        "nodeApiKeyFile",
    ]

    /// Options that take effect only at start: a SIGHUP that changes one keeps the running value and
    /// says so in the log.
    public static let restartOnlyKeys: Set<String> = [
        "listen", "admin", "registry", "threads", "checkInterval", "checkTimeout", "rise", "fall", "logLevel",
        "checkWebSocket",
    ]

    /// `hashKey` -> `SWITCHBOARD_BALANCE_HASH_KEY`.
    public static func environmentName(for key: String) -> String {
        ConfigurationKey.environmentName(for: key, prefix: Self.environmentPrefix)
    }

    /// Applies a config file's top-level object (keys as in `optionKeys`; `nodes` is a list).
    public mutating func apply(file object: JSONObject) throws(BalancerConfigurationError) {
        for member in object.members {
            switch member.value {
            case .string(let text): try self.set(member.key, text: text)
            case .number(let text): try self.set(member.key, text: text)
            case .array(let items) where member.key == "nodes":
                let texts = items.compactMap(\.stringValue)
                guard texts.count == items.count, texts.count <= 1000 else {
                    throw BalancerConfigurationError("nodes must be a list of \"HOST:PORT[,weight=N]\" strings")
                }
                self.nodes = try texts.map { text throws(BalancerConfigurationError) in try BackendNode.parse(text) }
            case .bool(let flag) where member.key == "checkWebSocket":
                self.checkWebSocket = flag
            case .null where member.key == "registry" || member.key == "admin":
                try self.set(member.key, text: "")
            default:
                throw BalancerConfigurationError("\(member.key): expected a string or a number")
            }
        }
    }

    /// Applies `SWITCHBOARD_BALANCE_*` variables from `environment`.
    public mutating func apply(environment: [String: String]) throws(BalancerConfigurationError) {
        for key in Self.optionKeys {
            guard let text = ConfigurationKey.environmentNames(for: key, prefix: Self.environmentPrefix).lazy.compactMap({ environment[$0] }).first
            else { continue }
            try self.set(key, text: text)
        }
    }

    /// Sets one option from text (environment variables, flags, file values). `nodes` takes node specs
    /// separated by spaces or semicolons (a spec may hold a comma: `HOST:PORT,weight=N`); an empty
    /// `registry`, `admin`, `tlsCert`, `tlsKey` or `nodeApiKeyFile` unsets it. `nodeApiKeyFile` is read
    /// here (so a SIGHUP reads it again: a rotated key takes effect without a restart).
    public mutating func set(_ key: String, text: String) throws(BalancerConfigurationError) {
        func seconds() throws(BalancerConfigurationError) -> TimeAmount {
            guard let value = Self.seconds(text) else {
                throw BalancerConfigurationError("\(key) expects a positive number of seconds up to 86400, got \(text)")
            }
            return value
        }
        func integer(_ range: ClosedRange<Int>) throws(BalancerConfigurationError) -> Int {
            guard let value = Int(text), range.contains(value) else {
                throw BalancerConfigurationError("\(key) must be an integer within \(range.lowerBound)-\(range.upperBound), got \(text)")
            }
            return value
        }
        switch key {
        case "listen": (self.host, self.port) = try Self.hostPort(text, option: "listen")
        case "admin":
            if text.isEmpty {
                self.adminHost = nil
                self.adminPort = nil
            } else {
                let (host, port) = try Self.hostPort(text, option: "admin")
                self.adminHost = host
                self.adminPort = port
            }
        case "nodes":
            let specs = text.split(whereSeparator: { $0 == " " || $0 == ";" || $0 == "\n" || $0 == "\t" })
            guard specs.count <= 1000 else { throw BalancerConfigurationError("at most 1000 nodes") }
            self.nodes = try specs.map { spec throws(BalancerConfigurationError) in try BackendNode.parse(String(spec)) }
        case "registry": self.registry = text.isEmpty ? nil : text
        case "algorithm":
            guard let algorithm = BalancingAlgorithm(rawValue: text) else {
                throw BalancerConfigurationError(
                    "algorithm must be one of \(BalancingAlgorithm.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            self.algorithm = algorithm
        case "hashKey":
            guard let source = HashKeySource(rawValue: text) else {
                throw BalancerConfigurationError("hashKey must be channel, user or client")
            }
            self.hashKey = source
        case "hashBalanceFactor":
            guard let percent = Double(text), percent.isFinite, (100...1000).contains(percent) else {
                throw BalancerConfigurationError("hashBalanceFactor must be within 100-1000 (percent)")
            }
            self.hashBalanceFactor = percent / 100
        case "rebalanceSpread":
            guard let percent = Double(text), percent.isFinite, (101...1000).contains(percent) else {
                throw BalancerConfigurationError("rebalanceSpread must be within 101-1000 (percent)")
            }
            self.rebalanceSpread = percent / 100
        case "nodeApiKeyFile": self.nodeAPIKey = text.isEmpty ? nil : try NodeAPIKey.read(file: text)
        case "tlsCert": self.tlsCertificatePath = text.isEmpty ? nil : text
        case "tlsKey": self.tlsKeyPath = text.isEmpty ? nil : text
        case "maxConnections": self.maxConnections = try integer(1...1_000_000)
        case "headerTimeout": self.headerTimeout = try seconds()
        case "connectTimeout": self.connectTimeout = try seconds()
        case "responseTimeout": self.responseTimeout = try seconds()
        case "tunnelIdleTimeout": self.tunnelIdleTimeout = try seconds()
        case "checkInterval": self.checkInterval = try seconds()
        case "checkTimeout": self.checkTimeout = try seconds()
        case "rise": self.rise = try integer(1...100)
        case "fall": self.fall = try integer(1...100)
        case "drainSeconds":
            guard let value = Double(text), value.isFinite, (0...86_400).contains(value) else {
                throw BalancerConfigurationError("drainSeconds must be within 0-86400")
            }
            self.drainSeconds = value
        case "logLevel": self.logLevel = text
        case "threads": self.eventLoopThreads = try integer(0...256)
        case "forwardClientAddress":
            guard let mode = ClientAddressForwarding(rawValue: text) else {
                throw BalancerConfigurationError("forwardClientAddress must be x-forwarded-for or proxy-protocol")
            }
            self.clientAddressForwarding = mode
        case "checkWebSocket":
            switch text.lowercased() {
            case "1", "true", "yes", "on": self.checkWebSocket = true
            case "0", "false", "no", "off", "": self.checkWebSocket = false
            default: throw BalancerConfigurationError("checkWebSocket: expected true or false, got \(text)")
            }
        default: throw BalancerConfigurationError("unknown option \(key)")
        }
    }

    /// The options whose values differ between `self` and `other` among `restartOnlyKeys`.
    public func restartOnlyDifferences(from other: BalancerConfiguration) -> [String] {
        var changed: [String] = []
        if self.host != other.host || self.port != other.port { changed.append("listen") }
        if self.adminHost != other.adminHost || self.adminPort != other.adminPort { changed.append("admin") }
        if self.registry != other.registry { changed.append("registry") }
        if self.eventLoopThreads != other.eventLoopThreads { changed.append("threads") }
        if self.checkInterval != other.checkInterval { changed.append("checkInterval") }
        if self.checkTimeout != other.checkTimeout { changed.append("checkTimeout") }
        if self.rise != other.rise { changed.append("rise") }
        if self.fall != other.fall { changed.append("fall") }
        if self.logLevel.lowercased() != other.logLevel.lowercased() { changed.append("logLevel") }
        if self.checkWebSocket != other.checkWebSocket { changed.append("checkWebSocket") }
        if (self.tlsCertificatePath == nil) != (other.tlsCertificatePath == nil) { changed.append("tlsCert (on/off)") }
        return changed
    }

    /// Parses `HOST:PORT` (`[v6]:PORT`), port 0-65535.
    public static func hostPort(_ text: String, option: String) throws(BalancerConfigurationError) -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { throw BalancerConfigurationError("\(option) expects HOST:PORT with a port within 0-65535") }
        var host = text[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw BalancerConfigurationError("\(option) expects HOST:PORT") }
        return (String(host), port)
    }
}
