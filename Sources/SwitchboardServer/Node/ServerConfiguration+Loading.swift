import Foundation
import SwitchboardAuth
public import SwitchboardCore
import Yams

/// Why a configuration could not be loaded.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension ServerConfiguration {
    /// The prefix of environment variables that set options (`SWITCHBOARD_PORT=9000`).
    public static let environmentPrefix = "SWITCHBOARD_"

    /// Option names (config file keys), each also settable as `SWITCHBOARD_<UPPER_SNAKE>`.
    public static let optionKeys = [
        "host", "port", "broker", "apiKey", "tokenSecret", "drainSeconds", "echoEndpoint", "maxMessageSize",
        "maxSubscriptions", "outboundLimit", "pingInterval", "pongTimeout", "logLevel", "nodeName",
        "eventLoopThreads", "presenceTTL", "idempotencyWindow", "requestTimeout", "maxRequestBodySize",
        "headTimeout", "maxConnections", "maxConnectionsPerIP", "maxPollsPerIP", "maxCommandsPerRequest", "maxHistoryLimit", "trustedProxies",
        "apiKeyFile", "tokenSecretFile", "allowedOrigins", "insecure",
        "haproxyAgentPort", "tlsCert", "tlsKey", "weight", "advertise",
        "rebalance", "rebalanceTolerance", "rebalanceHold", "rebalanceWindow", "rebalanceRate", "rebalanceMinAge",
    ]

    /// `maxMessageSize` -> `SWITCHBOARD_MAX_MESSAGE_SIZE`.
    public static func environmentName(for key: String) -> String {
        ConfigurationKey.environmentName(for: key, prefix: Self.environmentPrefix)
    }

    /// Reads a JSON or YAML file (by extension; other names are tried as JSON, then YAML). `balance`
    /// reads its config file through this too.
    public static func loadFile(_ path: String) throws -> JSONObject {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read config file \(path)")
        }
        let isYAML = path.hasSuffix(".yaml") || path.hasSuffix(".yml")
        if !isYAML, let value = try? JSONParser().parse(Array(data)) {
            guard case .object(let object) = value else { throw ConfigurationError("\(path): the top level must be an object") }
            return object
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ConfigurationError("\(path) is not UTF-8") }
        let loaded: Any?
        do {
            loaded = try Yams.load(yaml: text)
        } catch {
            throw ConfigurationError("\(path): \(error)")
        }
        guard case .object(let object) = try Self.jsonValue(fromYAML: loaded ?? [String: Any]()) else {
            throw ConfigurationError("\(path): the top level must be a mapping")
        }
        return object
    }

    private static func jsonValue(fromYAML value: Any) throws -> JSONValue {
        switch value {
        case let b as Bool: return .bool(b)
        case let i as Int: return .integer(i)
        case let d as Double: return .number(String(d))
        case let s as String: return .string(s)
        case let a as [Any]: return .array(try a.map(jsonValue(fromYAML:)))
        case let m as [String: Any]:
            return .object(JSONObject(try m.sorted { $0.key < $1.key }.map { ($0.key, try jsonValue(fromYAML: $0.value)) }))
        case is NSNull: return .null
        default: throw ConfigurationError("unsupported value in config: \(value)")
        }
    }

    /// Applies a config file's object (keys as in `optionKeys`, plus `namespaces`, `defaults`,
    /// `tokens` and `limits`). `directory` resolves relative key file names (the config file's folder).
    public mutating func apply(file object: JSONObject, directory: String? = nil) throws {
        for member in object.members {
            switch member.key {
            case "tokens":
                do {
                    self.tokens = try TokenSettings(json: member.value, baseDirectory: directory)
                } catch {
                    throw ConfigurationError(error.description)
                }
            case "limits":
                guard case .object(let limits) = member.value else { throw ConfigurationError("limits must be a mapping") }
                try self.applyLimits(limits)
            case "namespaces":
                guard case .object(let namespaces) = member.value else { throw ConfigurationError("namespaces must be a mapping") }
                for ns in namespaces.members {
                    guard case .object(let options) = ns.value else { throw ConfigurationError("namespace \(ns.key) must be a mapping") }
                    let name = ns.key.hasSuffix(":") ? String(ns.key.dropLast()) : ns.key
                    self.namespaces.namespaces[name] = try Self.namespaceOptions(options, base: self.namespaces.defaults, name: name)
                }
            case "tls":
                guard case .object(let tls) = member.value else { throw ConfigurationError("tls must be a mapping with cert and key") }
                for option in tls.members {
                    switch option.key {
                    case "cert": try self.set("tlsCert", ConfigurationValue(json: option.value))
                    case "key": try self.set("tlsKey", ConfigurationValue(json: option.value))
                    default: throw ConfigurationError("unknown option tls.\(option.key) (known: cert, key)")
                    }
                }
            case "defaults":
                guard case .object(let options) = member.value else { throw ConfigurationError("defaults must be a mapping") }
                self.namespaces.defaults = try Self.namespaceOptions(options, base: .defaults, name: "defaults")
            default:
                try self.set(member.key, ConfigurationValue(json: member.value))
            }
        }
    }

    /// Applies `SWITCHBOARD_*` variables from `environment`.
    public mutating func apply(environment: [String: String]) throws {
        for key in Self.optionKeys {
            guard let text = ConfigurationKey.environmentNames(for: key, prefix: Self.environmentPrefix).lazy.compactMap({ environment[$0] }).first
            else { continue }
            try self.set(key, text: text)
        }
    }

    /// Sets one option from text (environment variables): a list is comma-separated, a flag
    /// true/false (1/0, yes/no, on/off), a number a decimal literal.
    public mutating func set(_ key: String, text: String) throws {
        switch key {
        case "trustedProxies", "allowedOrigins":
            let list = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            try self.set(key, .list(list))
        case "host", "broker", "apiKey", "tokenSecret", "nodeName", "logLevel", "apiKeyFile", "tokenSecretFile", "tlsCert", "tlsKey":
            try self.set(key, .string(text))
        case "echoEndpoint", "insecure", "rebalance":
            switch text.lowercased() {
            case "1", "true", "yes", "on": try self.set(key, .flag(true))
            case "0", "false", "no", "off", "": try self.set(key, .flag(false))
            default: throw ConfigurationError("\(key): expected true or false, got \(text)")
            }
        default:
            guard let number = Double(text) else { throw ConfigurationError("\(key): expected a number, got \(text)") }
            try self.set(key, .number(number))
        }
    }

    /// Sets one option (keys as in `optionKeys`) after the checks every source goes through:
    /// numbers finite and within bounds, ports within 0-65535, lists bounded, files readable.
    public mutating func set(_ key: String, _ value: ConfigurationValue) throws {
        func string() throws -> String {
            guard let s = value.stringValue else { throw ConfigurationError("\(key) must be a string") }
            return s
        }
        func number() throws -> Double {
            // Finite and at most ~31 years: every duration becomes a TimeAmount in nanoseconds.
            guard let d = value.doubleValue, d >= 0, d <= 1e9 else { throw ConfigurationError("\(key) must be a number from 0 to 1e9") }
            return d
        }
        func integer() throws -> Int {
            let d = try number()
            guard d == d.rounded(), d <= Double(Int32.max) else { throw ConfigurationError("\(key) must be an integer") }
            return Int(d)
        }
        switch key {
        case "host": self.host = try string()
        case "broker": self.broker = try string()
        case "port":
            let port = try integer()
            guard port <= 65535 else { throw ConfigurationError("port must be at most 65535") }
            self.port = port
        case "apiKey": self.apiKey = try string()
        case "tokenSecret":
            let s = try string()
            self.tokenSecret = s.isEmpty ? nil : s
        case "apiKeyFile":
            self.apiKey = try Self.readSecret(file: try string(), option: key)
        case "tokenSecretFile":
            self.tokenSecret = try Self.readSecret(file: try string(), option: key)
        case "insecure":
            guard let b = value.boolValue else { throw ConfigurationError("insecure must be true or false") }
            self.insecure = b
        case "allowedOrigins":
            guard let origins = value.listValue, origins.count <= 1000
            else { throw ConfigurationError("allowedOrigins must be a list of origins such as https://app.example") }
            for origin in origins where origin != "*" {
                guard origin.hasPrefix("http://") || origin.hasPrefix("https://"), OriginPolicy.isValidPattern(origin) else {
                    throw ConfigurationError("allowedOrigins: \(origin) is not scheme://host[:port] (http or https, no path)")
                }
            }
            self.allowedOrigins = origins
        case "drainSeconds":
            // A day at most, as the balancer's: the drain spreads its batches over the window.
            let seconds = try number()
            guard seconds <= 86_400 else { throw ConfigurationError("drainSeconds must be at most 86400 (a day)") }
            self.drainSeconds = seconds
        case "echoEndpoint":
            guard let b = value.boolValue else { throw ConfigurationError("echoEndpoint must be true or false") }
            self.echoEndpoint = b
        case "rebalance":
            guard let b = value.boolValue else { throw ConfigurationError("rebalance must be true or false") }
            self.rebalance = b
        case "rebalanceTolerance": self.rebalanceTolerance = try number()
        case "rebalanceHold": self.rebalanceHold = try number()
        case "rebalanceWindow": self.rebalanceWindow = try number()
        case "rebalanceRate": self.rebalanceRate = max(0.1, try number())
        case "rebalanceMinAge": self.rebalanceMinAge = try number()
        case "maxMessageSize": self.maxMessageSize = max(2, try integer())
        case "maxSubscriptions": self.maxSubscriptions = try integer()
        case "outboundLimit": self.outboundLimit = max(1024, try integer())
        case "pingInterval": self.pingInterval = try number()
        case "pongTimeout": self.pongTimeout = try number()
        case "logLevel": self.logLevel = try string()
        case "nodeName": self.nodeName = try string()
        case "eventLoopThreads":
            // Each loop is a thread with two descriptors: thousands would fail to start (NIO traps).
            let threads = try integer()
            guard threads <= 1024 else { throw ConfigurationError("eventLoopThreads must be from 0 to 1024") }
            self.eventLoopThreads = threads
        case "presenceTTL": self.presenceTTL = max(1, try number())
        case "idempotencyWindow": self.idempotencyWindow = try number()
        case "requestTimeout": self.requestTimeout = max(1, try number())
        case "maxRequestBodySize": self.maxRequestBodySize = max(1024, try integer())
        case "headTimeout": self.headTimeout = max(0.1, try number())
        case "maxConnections": self.maxConnections = try integer()
        case "maxConnectionsPerIP": self.maxConnectionsPerIP = max(1, try integer())
        case "maxPollsPerIP": self.maxPollsPerIP = max(1, try integer())
        case "maxCommandsPerRequest": self.maxCommandsPerRequest = max(1, try integer())
        case "maxHistoryLimit": self.maxHistoryLimit = max(1, try integer())
        case "haproxyAgentPort":
            let port = try integer()
            guard port <= 65535 else { throw ConfigurationError("haproxyAgentPort must be at most 65535") }
            self.haproxyAgentPort = port
        case "weight":
            let weight = try integer()
            guard (1...Self.maximumWeight).contains(weight) else {
                throw ConfigurationError("weight must be within 1-\(Self.maximumWeight)")
            }
            self.weight = weight
        case "advertise":
            let text = try string()
            self.advertise = text.isEmpty ? nil : try AdvertisedAddress.parse(text)
        case "tlsCert":
            let path = try string()
            self.tlsCertificateFile = path.isEmpty ? nil : path
        case "tlsKey":
            let path = try string()
            self.tlsKeyFile = path.isEmpty ? nil : path
        case "trustedProxies":
            guard let addresses = value.listValue, addresses.count <= 1000
            else { throw ConfigurationError("trustedProxies must be a list of IP addresses or CIDR blocks") }
            _ = try TrustedProxySet(addresses)
            self.trustedProxies = addresses
        default: throw ConfigurationError("unknown option \(key)")
        }
    }

    /// A secret from a file (`--api-key-file`, `--token-secret-file`), so it stays out of `ps` and
    /// the environment: the file's text without trailing newlines; errors name the file, never its content.
    static func readSecret(file: String, option: String) throws -> String {
        do {
            return try TokenSettings.readSecretFile(file, field: option)
        } catch {
            throw ConfigurationError(error.description)
        }
    }

    private mutating func applyLimits(_ object: JSONObject) throws {
        for member in object.members {
            guard let d = member.value.doubleValue, d >= 0, d <= 1e9, d == d.rounded() else {
                throw ConfigurationError("limits.\(member.key) must be a whole number from 0 to 1e9")
            }
            switch member.key {
            case "connectionsPerUser": self.limits.connectionsPerUser = Int(d)
            case "connectsPerIPPerSecond": self.limits.connectsPerIPPerSecond = Int(d)
            case "commandsPerSecond":
                guard d >= 1 else { throw ConfigurationError("limits.commandsPerSecond must be at least 1") }
                self.limits.commandsPerSecond = d
            case "commandBurst":
                guard d >= 1 else { throw ConfigurationError("limits.commandBurst must be at least 1") }
                self.limits.commandBurst = d
            case "historyBytesPerSecond":
                guard d >= 1 else { throw ConfigurationError("limits.historyBytesPerSecond must be at least 1") }
                self.limits.historyBytesPerSecond = d
            case "historyBurstBytes":
                guard d >= 1 else { throw ConfigurationError("limits.historyBurstBytes must be at least 1") }
                self.limits.historyBurstBytes = d
            default: throw ConfigurationError("unknown option limits.\(member.key)")
            }
        }
    }

    static func namespaceOptions(_ object: JSONObject, base: NamespaceOptions, name: String) throws -> NamespaceOptions {
        var options = base
        for member in object.members {
            func flag() throws -> Bool {
                guard let b = member.value.boolValue else { throw ConfigurationError("\(name).\(member.key) must be true or false") }
                return b
            }
            func number() throws -> Double {
                guard let d = member.value.doubleValue, d >= 0, d <= 1e9 else {
                    throw ConfigurationError("\(name).\(member.key) must be a number from 0 to 1e9")
                }
                return d
            }
            switch member.key {
            case "historySize": options.historySize = Int(try number())
            case "historyTTL": options.historyTTL = try number()
            case "presence": options.presence = try flag()
            case "joinLeave": options.joinLeave = try flag()
            case "publish": options.publish = try flag()
            case "anonymous": options.anonymous = try flag()
            case "allowSubscribeForClient": options.allowSubscribeForClient = try flag()
            case "allowSubscribeForAnonymous": options.allowSubscribeForAnonymous = try flag()
            case "allowPublishForClient": options.allowPublishForClient = try flag()
            case "allowPublishForSubscriber": options.allowPublishForSubscriber = try flag()
            case "allowPublishForAnonymous": options.allowPublishForAnonymous = try flag()
            case "allowHistoryForClient": options.allowHistoryForClient = try flag()
            case "allowHistoryForSubscriber": options.allowHistoryForSubscriber = try flag()
            case "allowHistoryForAnonymous": options.allowHistoryForAnonymous = try flag()
            case "allowPresenceForClient": options.allowPresenceForClient = try flag()
            case "allowPresenceForSubscriber": options.allowPresenceForSubscriber = try flag()
            case "allowPresenceForAnonymous": options.allowPresenceForAnonymous = try flag()
            case "allowUserLimitedChannels": options.allowUserLimitedChannels = try flag()
            default: throw ConfigurationError("unknown namespace option \(name).\(member.key)")
            }
        }
        return options
    }
}
