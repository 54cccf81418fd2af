public import Foundation
import NIOCore
public import SwitchboardCore

/// A message published in a channel, as a subscriber receives it.
public struct ClientPublication: Sendable, Hashable {
    /// Its place in the channel's stream (1, 2, 3, …); nil in a channel without history.
    public var offset: UInt64?
    /// The published JSON exactly as its publisher sent it.
    public var data: RawJSON
    /// Who published it; nil for publications from the HTTP API.
    public var info: ClientInfo?

    public init(offset: UInt64?, data: RawJSON, info: ClientInfo? = nil) {
        self.offset = offset
        self.data = data
        self.info = info
    }

    /// `data` as JSON text.
    public var json: String { String(buffer: self.data.bytes) }

    /// `data` decoded as `type`.
    public func decode<T: Decodable>(_ type: T.Type = T.self, using decoder: JSONDecoder = JSONDecoder()) throws -> T {
        try decoder.decode(type, from: Data(self.data.bytes.readableBytesView))
    }

    /// A publication from a push or a result list; nil without valid `data`.
    init?(json: JSONObject) {
        let data: RawJSON
        switch json["data"] {
        case .raw(let raw):
            data = raw
        case .some(let value):
            data = RawJSON(value)
        case .none:
            return nil
        }
        self.init(offset: json["offset"]?.uint64Value, data: data, info: json["info"].flatMap(ClientInfo.init(json:)))
    }
}
