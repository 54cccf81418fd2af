public import NIOCore

/// The part of the configuration a client connection needs, resolved once at start.
public struct FrontSettings: Sendable {
    public var headerTimeout: TimeAmount
    public var connectTimeout: TimeAmount
    public var tunnelIdleTimeout: TimeAmount
    public var connectAttempts: Int
    public var hashKey: HashKeySource
    public var forwardedProto: String
    public var waterMarks: ChannelOptions.Types.WriteBufferWaterMark
    /// How long a refused client may keep sending (discarded) before the socket is closed, so it reads
    /// the error response instead of a reset.
    public var refusalLinger: TimeAmount = .seconds(1)
    /// Resolved address of every node, by identity.
    public var addresses: [String: SocketAddress]

    public init(configuration: BalancerConfiguration, addresses: [String: SocketAddress]) {
        self.headerTimeout = configuration.headerTimeout
        self.connectTimeout = configuration.connectTimeout
        self.tunnelIdleTimeout = configuration.tunnelIdleTimeout
        self.connectAttempts = max(1, configuration.connectAttempts)
        self.hashKey = configuration.hashKey
        self.forwardedProto = configuration.forwardedProto
        self.waterMarks = .init(low: configuration.writeBufferLowWaterMark, high: configuration.writeBufferHighWaterMark)
        self.addresses = addresses
    }
}
