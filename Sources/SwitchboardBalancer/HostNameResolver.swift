#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// Resolves the host names that registry nodes announce (`serve --advertise name:port`), with the C
/// library's resolver (`getaddrinfo`, which blocks: call it off the event loops).
///
/// An IPv4 address is preferred when a name has both kinds: `localhost` and many container names carry
/// an IPv6 address too, while a node usually listens on one IPv4 address.
enum HostNameResolver {
    /// How long a resolved address is used before the name is looked up again.
    static let timeToLive: TimeAmount = .seconds(30)
    /// Most names looked up in one registry read (the rest wait for the next read).
    static let maximumLookupsPerRead = 64

    /// Whether `host` is an IP literal (needs no lookup).
    static func isIPLiteral(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    /// The address of `host`:`port`, IPv4 first; throws when the name does not resolve.
    static func resolve(host: String, port: Int) throws -> SocketAddress {
        for family in [AF_INET, AF_INET6] {
            var hints = addrinfo()
            hints.ai_family = family
            #if canImport(Glibc)
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            #else
            hints.ai_socktype = SOCK_STREAM
            #endif
            var list: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else { continue }
            defer { freeaddrinfo(list) }
            var entry: UnsafeMutablePointer<addrinfo>? = first
            while let info = entry {
                if let address = info.pointee.ai_addr, info.pointee.ai_family == family {
                    if family == AF_INET {
                        let ipv4 = UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in.self)
                        return SocketAddress(ipv4, host: host)
                    } else {
                        let ipv6 = UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in6.self)
                        return SocketAddress(ipv6, host: host)
                    }
                }
                entry = info.pointee.ai_next
            }
        }
        throw BalancerConfigurationError("cannot resolve \(host)")
    }
}
