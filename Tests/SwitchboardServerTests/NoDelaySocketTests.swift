import Foundation
import Logging
import NIOCore
import SwitchboardBalancer
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Nagle's algorithm is off on every socket a message crosses: a node's accepted connections and both
/// sides of a balancer's tunnel. With it on, a small write that waits for the ACK of the one before can
/// sit behind the peer's delayed ACK (40 ms on Linux). The sockets get the option from their listener
/// (Linux copies it to accepted sockets) or from NIO's `ClientBootstrap`, not from a call per socket,
/// so the test reads it back from the kernel, socket by socket, in this process.
@Suite struct NoDelaySocketTests {
    @Test func everySocketOfATunnelThroughTheBalancerToANodeHasNagleOff() async throws {
        try await LoopbackNode.run { _, nodePort, group in
            var configuration = BalancerConfiguration()
            configuration.port = 0
            configuration.nodes = [BackendNode(host: "127.0.0.1", port: nodePort)]
            configuration.checkInterval = .milliseconds(100)
            let balancer = try BalancerServer(configuration: configuration, group: group, logger: Logger(label: "test"))
            let (balancerPort, _) = try await balancer.start()
            let client = try await Self.requestThroughTunnel(port: balancerPort)
            defer { close(client.fd) }
            let sockets = Self.loopbackTCPSockets()
            let front = sockets.filter { $0.localPort == balancerPort && $0.peerPort == client.localPort }
            let nodeSide = sockets.filter { $0.peerPort == nodePort }
            let nodeAccepted = sockets.filter { $0.localPort == nodePort }
            #expect(front.count == 1, "the balancer's socket of the client's connection")
            #expect(!nodeSide.isEmpty, "the balancer's socket to the node")
            #expect(!nodeAccepted.isEmpty, "the node's socket of the tunnel")
            for socket in front + nodeSide + nodeAccepted {
                #expect(socket.noDelay, "Nagle on: local port \(socket.localPort), peer port \(socket.peerPort)")
            }
            await balancer.stop()
        }
    }

    struct TCPSocket {
        var fd: Int32
        var localPort: Int
        var peerPort: Int
        var noDelay: Bool
    }

    /// Opens a WebSocket through the balancer (retrying while the balancer may still be checking the node
    /// for the first time), so the tunnel stays open.
    static func requestThroughTunnel(port: Int) async throws -> (fd: Int32, localPort: Int) {
        for _ in 0..<50 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw TunnelNotOpened(reason: "socket() failed, errno \(errno)") }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            // sockaddr_in as bytes: family (host order), port and address (network order), zeros.
            var address = [UInt8](repeating: 0, count: 16)
            withUnsafeBytes(of: UInt16(AF_INET)) { address.replaceSubrange(0..<2, with: $0) }
            address.replaceSubrange(2..<8, with: [UInt8(port >> 8), UInt8(port & 0xff), 127, 0, 0, 1])
            let connected = address.withUnsafeBytes {
                connect(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(address.count))
            }
            let request = Array(
                ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8)
            var reply = [UInt8](repeating: 0, count: 512)
            if connected == 0, send(fd, request, request.count, 0) == request.count {
                let count = recv(fd, &reply, reply.count, 0)
                if count > 0, String(decoding: reply[..<count], as: UTF8.self).hasPrefix("HTTP/1.1 101"),
                    let localPort = Self.port(of: fd, peer: false)
                {
                    return (fd, localPort)
                }
            }
            close(fd)
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TunnelNotOpened(reason: "no 101 through the balancer in 50 attempts")
    }

    struct TunnelNotOpened: Error, CustomStringConvertible {
        var reason: String
        var description: String { "no WebSocket through the balancer: \(self.reason)" }
    }

    /// Every connected TCP socket this process holds, with its ports and `TCP_NODELAY`.
    static func loopbackTCPSockets() -> [TCPSocket] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return names.compactMap { name in
            guard let fd = Int32(name), let local = Self.port(of: fd, peer: false),
                let peer = Self.port(of: fd, peer: true)
            else { return nil }
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &value, &length) == 0 else { return nil }
            return TCPSocket(fd: fd, localPort: local, peerPort: peer, noDelay: value != 0)
        }
    }

    /// The local or peer port of an IPv4 or IPv6 socket (a node listening on `::` holds IPv4 clients
    /// as IPv6 sockets); nil for anything else or a socket with no peer.
    static func port(of fd: Int32, peer: Bool) -> Int? {
        // Read as bytes: the family (host order) first, then the port (network order), at the same
        // offsets in sockaddr_in and sockaddr_in6.
        var address = [UInt8](repeating: 0, count: 128)
        var length = socklen_t(address.count)
        let result = address.withUnsafeMutableBytes {
            let pointer = $0.baseAddress!.assumingMemoryBound(to: sockaddr.self)
            return peer ? getpeername(fd, pointer, &length) : getsockname(fd, pointer, &length)
        }
        let family = address.withUnsafeBytes { $0.load(as: UInt16.self) }
        guard result == 0, family == UInt16(AF_INET) || family == UInt16(AF_INET6) else { return nil }
        return Int(address[2]) << 8 | Int(address[3])
    }
}
