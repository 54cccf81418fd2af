/// How option names map to environment variables, shared by `serve` (`SWITCHBOARD_`) and `balance`
/// (`SWITCHBOARD_BALANCE_`) so both commands read the same way: flags beat the environment, which
/// beats the config file, which beats the defaults.
public enum ConfigurationKey {
    /// `maxMessageSize` with prefix `SWITCHBOARD_` -> `SWITCHBOARD_MAX_MESSAGE_SIZE`. A run of
    /// capitals is one word: `maxConnectionsPerIP` -> `..._MAX_CONNECTIONS_PER_IP`, `presenceTTL` ->
    /// `..._PRESENCE_TTL` (a capital starts a word after a lowercase letter or a digit, or when it
    /// starts a lowercase word after a run of capitals).
    public static func environmentName(for key: String, prefix: String) -> String {
        var result = prefix
        let characters = Array(key)
        for (index, character) in characters.enumerated() {
            if character.isUppercase, index > 0 {
                let previous = characters[index - 1]
                let startsLowercaseWord = index + 1 < characters.count && characters[index + 1].isLowercase
                if previous.isLowercase || previous.isNumber || (previous.isUppercase && startsLowercaseWord) {
                    result.append("_")
                }
            }
            result.append(contentsOf: character.uppercased())
        }
        return result
    }

    /// The names `key` is read from: `environmentName(for:prefix:)`, then, for keys with a run of
    /// capitals, the spelling nodes up to 2026-12-05 read (an underscore before every capital:
    /// `..._PER_I_P`), so a deployment that found that spelling keeps working.
    public static func environmentNames(for key: String, prefix: String) -> [String] {
        let name = Self.environmentName(for: key, prefix: prefix)
        var legacy = prefix
        for character in key {
            if character.isUppercase { legacy.append("_") }
            legacy.append(contentsOf: character.uppercased())
        }
        return legacy == name ? [name] : [name, legacy]
    }
}
