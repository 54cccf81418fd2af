import NIOCore
import SwitchboardBroker
import SwitchboardCore

/// Writes result and error objects shared by WebSocket replies and the HTTP API (through
/// `JSONObjectWriter`; publications inside them through the hot path's `writePublication`).
enum ResultWriter {
    static func writeError(_ buffer: inout ByteBuffer, _ error: SwitchboardError) {
        buffer.writeJSONObject { Self.errorFields(&$0, error) }
    }

    /// `code`, `message`, `temporary`.
    static func errorFields(_ object: inout JSONObjectWriter, _ error: SwitchboardError) {
        object.field("code", int: error.code.rawValue)
        object.field("message", string: error.message)
        object.field("temporary", bool: error.code.isTemporary)
    }

    /// `offset`, `epoch`.
    static func positionFields(_ object: inout JSONObjectWriter, _ position: StreamPosition) {
        object.field("offset", int: position.offset)
        object.field("epoch", string: position.epoch)
    }

    /// A publish result: the position when the channel keeps history, else `{}`.
    static func writePublishResult(_ buffer: inout ByteBuffer, _ result: PublishResult) {
        buffer.writeJSONObject { object in
            if result.position.offset > 0 { Self.positionFields(&object, result.position) }
        }
    }

    /// `ttl`: seconds left of the subscription token that admitted it (nil: it does not expire).
    static func writeSubscribeResult(_ buffer: inout ByteBuffer, _ activation: SubscriptionActivation, ttl: Int? = nil) {
        buffer.writeJSONObject { object in
            if let position = activation.position {
                Self.positionFields(&object, position)
            }
            object.field("recoverable", bool: activation.position != nil)
            object.field("positioned", bool: activation.position != nil)
            if let recovered = activation.recovered {
                object.field("recovered", bool: recovered)
                object.array("publications") { Self.publications(&$0, activation.publications) }
            }
            if let ttl {
                object.field("expires", bool: true)
                object.field("ttl", int: ttl)
            }
        }
    }

    static func publications(_ array: inout JSONArrayWriter, _ publications: [Publication]) {
        for publication in publications {
            array.element { $0.writePublication(publication) }
        }
    }

    static func writeHistory(_ buffer: inout ByteBuffer, _ history: HistoryResult, since: StreamPosition?) {
        // Publications after a position from another epoch mean nothing to the caller.
        let stale = since.map { $0.epoch != history.position.epoch && !$0.epoch.isEmpty } ?? false
        buffer.writeJSONObject { object in
            object.array("publications") { Self.publications(&$0, stale ? [] : history.publications) }
            Self.positionFields(&object, history.position)
        }
    }

    /// `{"clients": {id: info}}`; each client's `meta` only for the HTTP API (`includingMeta`).
    static func writePresence(_ buffer: inout ByteBuffer, _ clients: [ClientInfo], includingMeta: Bool = false) {
        buffer.writeJSONObject { object in
            object.object("clients") { entries in
                for client in clients {
                    entries.field(client.client) { $0.writeClientInfo(client, includingMeta: includingMeta) }
                }
            }
        }
    }

    static func writePresenceStats(_ buffer: inout ByteBuffer, _ clients: [ClientInfo]) {
        let users = Set(clients.map(\.user))
        buffer.writeJSONObject { object in
            object.field("clients", int: clients.count)
            object.field("users", int: users.count)
        }
    }
}
