import NIOCore
import SwitchboardBroker
import SwitchboardCore

/// Writes result and error objects shared by WebSocket replies and the HTTP API.
enum ResultWriter {
    static func writeError(_ buffer: inout ByteBuffer, _ error: SwitchboardError) {
        buffer.writeStaticString("{\"code\":")
        buffer.writeDecimal(error.code.rawValue)
        buffer.writeStaticString(",\"message\":")
        buffer.writeJSONString(error.message)
        buffer.writeStaticString(",\"temporary\":")
        buffer.writeStaticString(error.code.isTemporary ? "true" : "false")
        buffer.writeInteger(UInt8(ascii: "}"))
    }

    static func writePosition(_ buffer: inout ByteBuffer, _ position: StreamPosition) {
        buffer.writeStaticString("\"offset\":")
        buffer.writeDecimal(position.offset)
        buffer.writeStaticString(",\"epoch\":")
        buffer.writeJSONString(position.epoch)
    }

    /// `ttl`: seconds left of the subscription token that admitted it (nil: it does not expire).
    static func writeSubscribeResult(_ buffer: inout ByteBuffer, _ activation: SubscriptionActivation, ttl: Int? = nil) {
        buffer.writeInteger(UInt8(ascii: "{"))
        if let position = activation.position {
            Self.writePosition(&buffer, position)
            buffer.writeStaticString(",\"recoverable\":true,\"positioned\":true")
        } else {
            buffer.writeStaticString("\"recoverable\":false,\"positioned\":false")
        }
        if let recovered = activation.recovered {
            buffer.writeStaticString(recovered ? ",\"recovered\":true" : ",\"recovered\":false")
            buffer.writeStaticString(",\"publications\":")
            Self.writePublications(&buffer, activation.publications)
        }
        if let ttl {
            buffer.writeStaticString(",\"expires\":true,\"ttl\":")
            buffer.writeDecimal(ttl)
        }
        buffer.writeInteger(UInt8(ascii: "}"))
    }

    static func writePublications(_ buffer: inout ByteBuffer, _ publications: [Publication]) {
        buffer.writeInteger(UInt8(ascii: "["))
        for (i, publication) in publications.enumerated() {
            if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            buffer.writePublication(publication)
        }
        buffer.writeInteger(UInt8(ascii: "]"))
    }

    static func writeHistory(_ buffer: inout ByteBuffer, _ history: HistoryResult, since: StreamPosition?) {
        buffer.writeStaticString("{\"publications\":")
        // Publications after a position from another epoch mean nothing to the caller.
        let stale = since.map { $0.epoch != history.position.epoch && !$0.epoch.isEmpty } ?? false
        Self.writePublications(&buffer, stale ? [] : history.publications)
        buffer.writeInteger(UInt8(ascii: ","))
        Self.writePosition(&buffer, history.position)
        buffer.writeInteger(UInt8(ascii: "}"))
    }

    static func writePresence(_ buffer: inout ByteBuffer, _ clients: [ClientInfo]) {
        buffer.writeStaticString("{\"clients\":{")
        for (i, client) in clients.enumerated() {
            if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            buffer.writeJSONString(client.client)
            buffer.writeInteger(UInt8(ascii: ":"))
            buffer.writeClientInfo(client)
        }
        buffer.writeStaticString("}}")
    }

    static func writePresenceStats(_ buffer: inout ByteBuffer, _ clients: [ClientInfo]) {
        let users = Set(clients.map(\.user))
        buffer.writeStaticString("{\"clients\":")
        buffer.writeDecimal(clients.count)
        buffer.writeStaticString(",\"users\":")
        buffer.writeDecimal(users.count)
        buffer.writeInteger(UInt8(ascii: "}"))
    }
}
