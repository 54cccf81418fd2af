/// How many load processes a run uses: a number, or one per
/// `connectionsPerProcess` connections.
public enum ProcessCount: Sendable, Hashable, Codable, CustomStringConvertible {
    case fixed(Int)
    case auto

    /// Parses `auto` or a positive integer.
    public init?(_ text: String) {
        if text.lowercased() == "auto" {
            self = .auto
        } else if let value = Int(text), value >= 1 {
            self = .fixed(value)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .auto: "auto"
        case .fixed(let value): String(value)
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = ProcessCount(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad process count \(text)"))
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.description)
    }
}
