/// How option names map to environment variables, shared by `serve` (`SWITCHBOARD_`) and `balance`
/// (`SWITCHBOARD_BALANCE_`) so both commands read the same way: flags beat the environment, which
/// beats the config file, which beats the defaults.
public enum ConfigurationKey {
    /// `maxMessageSize` with prefix `SWITCHBOARD_` -> `SWITCHBOARD_MAX_MESSAGE_SIZE`.
    public static func environmentName(for key: String, prefix: String) -> String {
        var result = prefix
        for character in key {
            if character.isUppercase { result.append("_") }
            result.append(contentsOf: character.uppercased())
        }
        return result
    }
}
