import ArgumentParser
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Refuses to start on a port another process listens on. The node and the balancer listen with one
/// socket per event loop sharing the port (`SO_REUSEPORT`), which the kernel would also let a second
/// `switchboard` of the same user join: it would then take a share of the connections instead of
/// failing. A plain bind first fails with "address in use" as any server's would.
enum ListenPortCheck {
    static func ensureFree(host: String, port: Int, option: String) throws {
        guard port != 0 else { return }  // any free port: nothing to collide with
        let address: SocketAddress
        do {
            address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        } catch {
            throw ValidationError("\(option): cannot resolve \(host): \(error)")
        }
        #if canImport(Glibc)
        let stream = Int32(SOCK_STREAM.rawValue)
        #else
        let stream = SOCK_STREAM
        #endif
        let fd = socket(Int32(address.protocol.rawValue), stream, 0)
        guard fd >= 0 else { return }  // no socket to probe with: the real bind reports what is wrong
        defer { close(fd) }
        var one: Int32 = 1
        // Like the listeners: a port whose old connections wait in TIME_WAIT is free.
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let result = address.withSockAddr { pointer, size in bind(fd, pointer, socklen_t(size)) }
        if result != 0 {
            let reason = String(cString: strerror(errno))
            throw ValidationError("\(option): cannot listen on \(host):\(port): \(reason)")
        }
    }
}
