public import SwitchboardCore

/// One option's value as a source gives it: typed by flags (`--max-connections 5000` is a number
/// from the start), converted from a config file's JSON or YAML, or parsed from an environment
/// variable's text. Every source then goes through the same checks (`ServerConfiguration.set`).
public enum ConfigurationValue: Sendable, Hashable {
    case string(String)
    case number(Double)
    case flag(Bool)
    case list([String])
    /// Something no option takes (an object, null, a list holding non-strings): each option's check
    /// names what it expected.
    case unsupported

    /// A config file's value.
    public init(json: JSONValue) {
        switch json {
        case .string(let s): self = .string(s)
        case .bool(let b): self = .flag(b)
        case .number:
            if let d = json.doubleValue, d.isFinite { self = .number(d) } else { self = .unsupported }
        case .array(let items):
            let strings = items.compactMap(\.stringValue)
            self = strings.count == items.count ? .list(strings) : .unsupported
        case .object, .null:
            self = .unsupported
        }
    }

    var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    var doubleValue: Double? {
        if case .number(let d) = self, d.isFinite { return d }
        return nil
    }

    var boolValue: Bool? {
        if case .flag(let b) = self { return b }
        return nil
    }

    var listValue: [String]? {
        if case .list(let l) = self { return l }
        return nil
    }
}
