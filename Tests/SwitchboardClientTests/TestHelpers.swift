import NIOConcurrencyHelpers

@testable import SwitchboardClient

extension ConnectionState {
    var isConnected: Bool {
        if case .connected = self { return true }
        return false
    }
}

/// A count shared with a `@Sendable` closure.
final class Counter: Sendable {
    private let storage = NIOLockedValueBox(0)
    func increment() { self.storage.withLockedValue { $0 += 1 } }
    var value: Int { self.storage.withLockedValue { $0 } }
}
