public import NIOCore

/// Who a client is, as shown in publications' `info`, presence and join/leave.
public struct ClientInfo: Hashable, Sendable {
    /// The server-assigned client id.
    public var client: String
    /// The user id from the client's token; empty for anonymous clients.
    public var user: String
    /// Optional application data from the token's `info` claim (compact JSON).
    public var info: JSONValue?

    public init(client: String, user: String, info: JSONValue? = nil) {
        self.client = client
        self.user = user
        self.info = info
    }
}

extension ByteBuffer {
    /// Writes `{"client":..,"user":..(,"info":..)}`.
    public mutating func writeClientInfo(_ info: ClientInfo) {
        self.writeStaticString("{\"client\":")
        self.writeJSONString(info.client)
        self.writeStaticString(",\"user\":")
        self.writeJSONString(info.user)
        if let extra = info.info {
            self.writeStaticString(",\"info\":")
            self.writeJSON(extra)
        }
        self.writeInteger(UInt8(ascii: "}"))
    }
}
