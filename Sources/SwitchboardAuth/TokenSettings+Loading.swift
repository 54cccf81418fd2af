import Foundation
public import SwitchboardCore

extension TokenSettings {
    /// Why the `tokens` object is not acceptable; the message names the field and never a secret.
    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Reads the `tokens` object of a config file (the shape in the type's documentation).
    /// `baseDirectory` resolves relative file names (the config file's folder).
    public init(json value: JSONValue, baseDirectory: String? = nil) throws(Error) {
        self.init()
        guard case .object(let object) = value else { throw Error("tokens must be a mapping") }
        func path(_ file: String) -> String {
            guard let baseDirectory, !file.hasPrefix("/") else { return file }
            return baseDirectory + "/" + file
        }
        func algorithms(_ value: JSONValue?, _ field: String) throws(Error) -> [JWTAlgorithm]? {
            guard let value, value != .null else { return nil }
            guard let list = value.arrayValue, !list.isEmpty, list.count <= 8 else { throw Error("\(field).algorithms must be a non-empty list") }
            var result: [JWTAlgorithm] = []
            for item in list {
                guard let name = item.stringValue, let algorithm = JWTAlgorithm(header: name) else {
                    throw Error("\(field).algorithms: unsupported algorithm \(item.stringValue ?? "?") (HS256/384/512, RS256/384/512, ES256/384)")
                }
                result.append(algorithm)
            }
            return result
        }
        func string(_ value: JSONValue?, _ field: String) throws(Error) -> String? {
            guard let value, value != .null else { return nil }
            guard let s = value.stringValue else { throw Error("\(field) must be a string") }
            return s
        }
        func number(_ value: JSONValue, _ field: String, _ range: ClosedRange<Double>) throws(Error) -> Double {
            guard let d = value.doubleValue, range.contains(d) else { throw Error("\(field) must be a number from \(range.lowerBound) to \(range.upperBound)") }
            return d
        }
        for member in object.members {
            switch member.key {
            case "hmac":
                guard let list = member.value.arrayValue, list.count <= 32 else { throw Error("tokens.hmac must be a list (at most 32 keys)") }
                for (index, item) in list.enumerated() {
                    let field = "tokens.hmac[\(index)]"
                    guard case .object(let entry) = item else { throw Error("\(field) must be a mapping") }
                    for key in entry.members.map(\.key) where !["kid", "secret", "secretFile", "algorithms"].contains(key) {
                        throw Error("\(field): unknown field \(key)")
                    }
                    var secret = try string(entry["secret"], "\(field).secret")
                    if let file = try string(entry["secretFile"], "\(field).secretFile") {
                        secret = try Self.readSecretFile(path(file), field: "\(field).secretFile")
                    }
                    guard let secret, !secret.isEmpty else { throw Error("\(field) needs secret or secretFile") }
                    self.hmac.append(HMACKey(kid: try string(entry["kid"], "\(field).kid"), secret: secret, algorithms: try algorithms(entry["algorithms"], field) ?? [.hs256]))
                }
            case "publicKeys":
                guard let list = member.value.arrayValue, list.count <= 32 else { throw Error("tokens.publicKeys must be a list (at most 32 keys)") }
                for (index, item) in list.enumerated() {
                    let field = "tokens.publicKeys[\(index)]"
                    guard case .object(let entry) = item else { throw Error("\(field) must be a mapping") }
                    for key in entry.members.map(\.key) where !["kid", "file", "algorithms"].contains(key) {
                        throw Error("\(field): unknown field \(key)")
                    }
                    guard let file = try string(entry["file"], "\(field).file") else { throw Error("\(field) needs file") }
                    self.publicKeys.append(PublicKeyFile(kid: try string(entry["kid"], "\(field).kid"), file: path(file), algorithms: try algorithms(entry["algorithms"], field)))
                }
            case "jwks":
                guard case .object(let entry) = member.value else { throw Error("tokens.jwks must be a mapping with url or file") }
                let url = try string(entry["url"], "tokens.jwks.url")
                let file = try string(entry["file"], "tokens.jwks.file")
                switch (url, file) {
                case (let url?, nil): self.jwks = .url(url)
                case (nil, let file?): self.jwks = .file(path(file))
                default: throw Error("tokens.jwks needs exactly one of url and file")
                }
            case "audience": self.audience = try string(member.value, "tokens.audience")
            case "issuer": self.issuer = try string(member.value, "tokens.issuer")
            case "leeway": self.leeway = try number(member.value, "tokens.leeway", 0...TokenClaimPolicy.maximumLeeway)
            case "refreshGrace": self.refreshGrace = try number(member.value, "tokens.refreshGrace", 0...3600)
            case "maxTokenBytes": self.maxTokenBytes = Int(try number(member.value, "tokens.maxTokenBytes", 256...65_536))
            default: throw Error("unknown option tokens.\(member.key)")
            }
        }
    }

    /// A secret from a file: its content without the trailing newline; refused when unreadable or empty.
    public static func readSecretFile(_ path: String, field: String) throws(Error) -> String {
        guard let data = FileManager.default.contents(atPath: path), data.count <= 65_536,
            let text = String(data: data, encoding: .utf8)
        else { throw Error("\(field): cannot read \(path)") }
        let secret = text.trimmingCharacters(in: .newlines)
        guard !secret.isEmpty else { throw Error("\(field): \(path) is empty") }
        return secret
    }
}
