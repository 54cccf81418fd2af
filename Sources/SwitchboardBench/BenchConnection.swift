#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// An established client connection and the event loop slot it lives on.
struct BenchConnection: Sendable {
    let channel: any Channel
    let loopIndex: Int
    /// Index within this process (its loop slot and source address).
    let index: Int

    /// Closes with an RST (`SO_LINGER` 0) so this side keeps no TIME_WAIT
    /// entry and the source ports are free again at once. Call on the loop.
    static func abort(_ channel: any Channel) {
        if let provider = channel as? any SocketOptionProvider {
            _ = provider.setSoLinger(linger(l_onoff: 1, l_linger: 0))
        }
        channel.close(promise: nil)
    }
}
