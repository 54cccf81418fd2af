import NIOConcurrencyHelpers

/// The coordinator's list of workers, readable from the progress task.
final class WorkerRoster: Sendable {
    private let box: NIOLockedValueBox<[WorkerProcess]>

    init(_ workers: [WorkerProcess]) {
        self.box = NIOLockedValueBox(workers)
    }

    var all: [WorkerProcess] { self.box.withLockedValue { $0 } }

    func set(_ workers: [WorkerProcess]) { self.box.withLockedValue { $0 = workers } }
}
