public import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The part of the configuration a client connection needs, resolved once at start.
public struct FrontSettings: Sendable {
    public var headerTimeout: TimeAmount
    public var connectTimeout: TimeAmount
    public var responseTimeout: TimeAmount
    public var tunnelIdleTimeout: TimeAmount
    public var connectAttempts: Int
    public var hashKey: HashKeySource
    /// Whether picks use a key at all (`--algorithm hash`); other algorithms never read the request's key.
    public var picksByKey: Bool
    public var forwardedProto: String
    /// `X-Forwarded-For`/`-Proto` headers or a PROXY protocol v2 header.
    public var clientAddressForwarding: ClientAddressForwarding
    public var waterMarks: ChannelOptions.Types.WriteBufferWaterMark
    /// Receive buffers for both sides of a tunnel. NIO keeps each channel's last receive buffer for reuse,
    /// so its starting size is memory held by every idle connection (twice per tunnel): start at 256 B
    /// (NIO's default is 2 KB) and let the adaptive allocator grow it (up to 64 KB) for bulk traffic.
    public var receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65_536)
    /// How long a refused client may keep sending (discarded) before the socket is closed, so it reads
    /// the error response instead of a reset.
    public var refusalLinger: TimeAmount = .seconds(1)
    public init(configuration: BalancerConfiguration) {
        self.headerTimeout = configuration.headerTimeout
        self.connectTimeout = configuration.connectTimeout
        self.responseTimeout = configuration.responseTimeout
        self.tunnelIdleTimeout = configuration.tunnelIdleTimeout
        self.connectAttempts = max(1, configuration.connectAttempts)
        self.hashKey = configuration.hashKey
        self.picksByKey = configuration.algorithm == .hash
        self.forwardedProto = configuration.forwardedProto
        self.clientAddressForwarding = configuration.clientAddressForwarding
        self.waterMarks = .init(low: configuration.writeBufferLowWaterMark, high: configuration.writeBufferHighWaterMark)
    }
}

extension FrontSettings {
    /// Sets the options of either side of a tunnel (half-closure, the water marks, small
    /// receive buffers) on a channel that is not registered yet, from its initializer. Synchronous on
    /// purpose: a bootstrap's `channelOption`s are applied through a chain of futures, a cost paid twice
    /// per proxied connection.
    static func applyTunnelOptions(to channel: any Channel, settings: FrontSettings) throws {
        guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
        try options.setOption(.allowRemoteHalfClosure, value: true)
        // No TCP_NODELAY here: an accepted socket inherits it from the listener (ServerBootstrap sets it
        // there) and ClientBootstrap sets it on the node side. Setting it again cost two system calls
        // per socket (NIO reads the local address first), four per tunnel.
        try options.setOption(.writeBufferWaterMark, value: settings.waterMarks)
        try options.setOption(.recvAllocator, value: settings.receiveAllocator)
    }

    /// Lets the node-side socket carry its handshake's last ACK on the request instead of sending it
    /// alone (HAProxy's "smart connect"): the head is written as soon as the connect completes, so the
    /// ACK of the node's SYN-ACK waits for it. One segment fewer per tunnel, each of which the node's
    /// kernel would process. Linux only (`TCP_QUICKACK` 0); elsewhere nothing changes.
    static func delayAckOfConnect(on channel: any Channel) throws {
        #if os(Linux)
        try channel.syncOptions?.setOption(.tcpOption(.init(rawValue: CInt(TCP_QUICKACK))), value: 0)
        #endif
    }
}
