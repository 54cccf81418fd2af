import Foundation

/// The nodes' API key (`--node-api-key-file`), so that `POST /admin/rebalance` can ask each node to
/// rebalance (`POST /api/rebalance` on the node). Read from a file only, so it stays out of `ps` and
/// the shell history; never printed: its description is redacted.
public struct NodeAPIKey: Sendable, Hashable, CustomStringConvertible {
    /// The key as the nodes' `--api-key` knows it.
    public let value: String

    public init(_ value: String) {
        self.value = value
    }

    public var description: String { "(redacted)" }

    /// The key in `path`: the file's text without trailing newlines. Errors name the file, never its content.
    public static func read(file path: String) throws(BalancerConfigurationError) -> NodeAPIKey {
        guard let data = FileManager.default.contents(atPath: path), data.count <= 4096,
            let text = String(data: data, encoding: .utf8)
        else { throw BalancerConfigurationError("nodeApiKeyFile: cannot read \(path) (or larger than 4 KB)") }
        let key = text.trimmingCharacters(in: .newlines)
        guard !key.isEmpty else { throw BalancerConfigurationError("nodeApiKeyFile: \(path) is empty") }
        // The key goes into a header line: nothing that could end it or start another.
        guard key.unicodeScalars.allSatisfy({ $0.value >= 0x21 && $0.value < 0x7F }) else {
            throw BalancerConfigurationError("nodeApiKeyFile: \(path) holds spaces, control or non-ASCII characters")
        }
        return NodeAPIKey(key)
    }
}
