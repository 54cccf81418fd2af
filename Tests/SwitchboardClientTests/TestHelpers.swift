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

extension SwitchboardClient {
    /// The client's states (the one now first) until `done` returns true for one, with `start` run
    /// once the states are being watched; for at most `limit`: past it the client is closed, which
    /// ends the wait (a test that fails does not hang).
    func watchStates(
        limit: Duration = .seconds(10), after start: () async throws -> Void = {}, until done: (ConnectionState) -> Bool
    ) async rethrows -> [ConnectionState] {
        let states = await self.stateUpdates()
        let watchdog = Task {
            try await Task.sleep(for: limit)
            await self.close()
        }
        defer { watchdog.cancel() }
        try await start()
        var seen: [ConnectionState] = []
        for await state in states {
            seen.append(state)
            if done(state) { break }
            if case .closed = state { break }
        }
        return seen
    }
}
