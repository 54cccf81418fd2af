public import NIOCore

/// Who a client is, as shown in publications' `info`, presence and join/leave.
public struct ClientInfo: Hashable, Sendable {
    /// The server-assigned client id.
    public var client: String
    /// The user id from the client's token; empty for anonymous clients.
    public var user: String
    /// Optional application data from the token's `info` claim (compact JSON).
    public var info: JSONValue?
    /// Server-side data from the token's `meta` claim: kept with the client's presence so that a
    /// backend sees it through the HTTP API, never written to clients.
    public var meta: JSONValue?

    public init(client: String, user: String, info: JSONValue? = nil, meta: JSONValue? = nil) {
        self.client = client
        self.user = user
        self.info = info
        self.meta = meta
    }

    /// The same client without its server-side `meta` (what a publication carries).
    public var withoutMeta: ClientInfo {
        ClientInfo(client: self.client, user: self.user, info: self.info)
    }
}

extension ByteBuffer {
    /// Writes `{"client":..,"user":..(,"info":..)}`, and `"meta"` only when `includingMeta` (for
    /// the HTTP API and broker storage; never for clients).
    public mutating func writeClientInfo(_ info: ClientInfo, includingMeta: Bool = false) {
        self.writeStaticString("{\"client\":")
        self.writeJSONString(info.client)
        self.writeStaticString(",\"user\":")
        self.writeJSONString(info.user)
        if let extra = info.info {
            self.writeStaticString(",\"info\":")
            self.writeJSON(extra)
        }
        if includingMeta, let meta = info.meta {
            self.writeStaticString(",\"meta\":")
            self.writeJSON(meta)
        }
        self.writeInteger(UInt8(ascii: "}"))
    }
}
