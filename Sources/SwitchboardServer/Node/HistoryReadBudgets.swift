import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore

/// The node's budgets of history bytes read per client address (`ByteBudgetTable`), shared by
/// every event loop's sessions: a client cannot get a fresh budget by opening another connection,
/// as it can a fresh command rate. Taken once per history read (a `history` command, a recovery,
/// a poll with positions), never on the fan-out path.
final class HistoryReadBudgets: Sendable {
    private let table: NIOLockedValueBox<ByteBudgetTable>

    init(limits: ClientLimits) {
        self.table = NIOLockedValueBox(ByteBudgetTable(rate: limits.historyBytesPerSecond, burst: limits.historyBurstBytes))
    }

    /// Reserves `bytes` for a read on behalf of `address`: false when its budget is spent.
    func reserve(_ bytes: Int, for address: String) -> Bool {
        let now = NIODeadline.now().uptimeNanoseconds
        return self.table.withLockedValue { $0.reserve(bytes, for: address, now: now) }
    }

    /// Whether `address` may start a read now (its budget is not spent).
    func allowsRead(for address: String) -> Bool {
        let now = NIODeadline.now().uptimeNanoseconds
        return self.table.withLockedValue { $0.allowsRead(for: address, now: now) }
    }

    /// Charges `address` for a read that reserved nothing (a recovery), once it is done.
    func charge(_ bytes: Int, for address: String) {
        self.settle(reserved: 0, used: bytes, for: address)
    }

    /// Gives back what a read of `address` reserved and did not use.
    func settle(reserved: Int, used: Int, for address: String) {
        let now = NIODeadline.now().uptimeNanoseconds
        self.table.withLockedValue { $0.settle(reserved: reserved, used: used, for: address, now: now) }
    }
}

/// Where the history a join reads is charged: the joining client's address in the node's budgets.
struct HistoryReadCharge: Sendable {
    let budgets: HistoryReadBudgets
    let address: String

    func charge(_ bytes: Int) {
        guard bytes > 0 else { return }
        self.budgets.charge(bytes, for: self.address)
    }
}
