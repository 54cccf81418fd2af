import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A connect that failed for want of the balancer's own resources (file descriptors, socket buffers,
/// memory) rather than because of the node. Such a failure says nothing about the node: it neither
/// ejects the node nor fails its health check, and the client gets 503 (the balancer is full), not
/// 502. Without this, a client that fills the balancer's descriptors got healthy nodes ejected and
/// marked down.
enum LocalResourceFailure {
    /// Whether `error` (from `ClientBootstrap.connect`) is the balancer's own shortage.
    static func isLocal(_ error: any Error) -> Bool {
        guard let error = error as? IOError else { return false }
        return Self.codes.contains(error.errnoCode)
    }

    /// `EMFILE` (this process's descriptors), `ENFILE` (the system's), `ENOBUFS`, `ENOMEM`.
    static let codes: Set<Int32> = [EMFILE, ENFILE, ENOBUFS, ENOMEM]
}
