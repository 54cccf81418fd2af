public import NIOCore

/// One message in a channel.
public struct Publication: Hashable, Sendable {
    /// Position in the channel, starting at 1; 0 when the channel keeps no history.
    public var offset: UInt64
    /// The payload as compact JSON text, validated when it entered the system.
    public var data: ByteBuffer
    /// The publishing client, absent for publications from the server API.
    public var info: ClientInfo?
    /// When the publishing node accepted it, in nanoseconds since 1970 (0 when unknown); for latency metrics.
    public var time: UInt64

    public init(offset: UInt64, data: ByteBuffer, info: ClientInfo? = nil, time: UInt64 = 0) {
        self.offset = offset
        self.data = data
        self.info = info
        self.time = time
    }
}

extension ByteBuffer {
    /// Writes a publication object: `{"offset":N,"data":..,"info":..}`.
    public mutating func writePublication(_ publication: Publication) {
        self.writeInteger(UInt8(ascii: "{"))
        if publication.offset > 0 {
            self.writeStaticString("\"offset\":")
            self.writeDecimal(publication.offset)
            self.writeInteger(UInt8(ascii: ","))
        }
        self.writeStaticString("\"data\":")
        var data = publication.data
        self.writeBuffer(&data)
        if let info = publication.info {
            self.writeStaticString(",\"info\":")
            self.writeClientInfo(info)
        }
        self.writeInteger(UInt8(ascii: "}"))
    }

    /// Writes the push `{"channel":..,"pub":{..}}`. The hot path: encoded once per publication per
    /// node and sent to every subscriber, so written by hand, not with `JSONObjectWriter`.
    public mutating func writePublicationPush(channel: String, _ publication: Publication) {
        self.writeStaticString("{\"channel\":")
        self.writeJSONString(channel)
        self.writeStaticString(",\"pub\":")
        self.writePublication(publication)
        self.writeInteger(UInt8(ascii: "}"))
    }
}
