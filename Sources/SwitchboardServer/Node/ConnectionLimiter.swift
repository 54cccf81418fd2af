import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// The node's `ConnectionCounts`, shared by every event loop's accepts.
final class ConnectionLimiter: Sendable {
    private let counts: NIOLockedValueBox<ConnectionCounts>

    init(maximum: Int, maximumPerAddress: Int, connectsPerAddressPerSecond: Int = 0) {
        self.counts = NIOLockedValueBox(
            ConnectionCounts(maximum: maximum, maximumPerAddress: maximumPerAddress, connectsPerAddressPerSecond: connectsPerAddressPerSecond))
    }

    func admit(address: String, capped: Bool = true) -> ConnectionCounts.Admission {
        let second = NIODeadline.now().uptimeNanoseconds / 1_000_000_000
        return self.counts.withLockedValue { $0.admit(address: address, capped: capped, second: second) }
    }

    /// Whether to drop a connection from `address` as it is accepted (`ConnectionCounts.sheds`).
    func sheds(address: String, capped: Bool = true) -> Bool {
        let second = NIODeadline.now().uptimeNanoseconds / 1_000_000_000
        return self.counts.withLockedValue { $0.sheds(address: address, capped: capped, second: second) }
    }

    func release(address: String) {
        self.counts.withLockedValue { $0.release(address: address) }
    }

    var total: Int { self.counts.withLockedValue { $0.total } }

    /// The node-wide cap.
    var maximum: Int { self.counts.withLockedValue { $0.maximum } }

    /// Connections the open-files limit leaves room for: the soft `RLIMIT_NOFILE` less
    /// `reserve` descriptors for the listener, Redis, logs and files.
    static func defaultMaximum(reserve: Int = 100) -> Int {
        var limit = rlimit()
        #if os(Linux)
        let resource = Int32(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return 1024 }
        let soft = UInt64(min(limit.rlim_cur, 1 << 24))
        return max(16, Int(soft) - reserve)
    }
}
