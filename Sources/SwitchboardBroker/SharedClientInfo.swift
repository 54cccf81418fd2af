import SwitchboardCore

/// A client's info, held once by consecutive entries of a history that the same client published.
final class SharedClientInfo: Sendable {
    let value: ClientInfo

    init(_ value: ClientInfo) {
        self.value = value
    }
}
