import NIOCore
import SwitchboardCore

/// A command this client sends, written with its id when it goes out (ids are per connection,
/// so a command queued while disconnected gets its id on the connection that carries it).
enum OutgoingCommand: Sendable {
    case connect(token: String?, name: String, subs: [(channel: String, since: StreamPosition?)])
    case subscribe(channel: String, since: StreamPosition?, token: String?)
    case subRefresh(channel: String, token: String)
    case unsubscribe(channel: String)
    case publish(channel: String, data: RawJSON, idempotencyKey: String?)
    case history(channel: String, since: StreamPosition?, limit: Int?, reverse: Bool)
    case presence(channel: String)
    case presenceStats(channel: String)
    case ping
    case refresh(token: String)

    /// A `connect`'s params alone, as one JSON object: the body of `POST /sse`, which stands for the
    /// connect command (its reply comes as the stream's first event, with id 1). Other commands write nothing.
    func writeConnectParams(into buffer: inout ByteBuffer) {
        guard case .connect(let token, let name, let subs) = self else { return }
        buffer.writeJSONObject { Self.writeConnectParams(token: token, name: name, subs: subs, into: &$0) }
    }

    private static func writeConnectParams(
        token: String?, name: String, subs: [(channel: String, since: StreamPosition?)], into params: inout JSONObjectWriter
    ) {
        if let token { params.field("token", string: token) }
        params.field("name", string: name)
        params.field("version", string: SwitchboardVersion.current)
        if !subs.isEmpty {
            params.object("subs") { object in
                for sub in subs {
                    object.object(sub.channel) { Self.writePosition(sub.since, into: &$0) }
                }
            }
        }
    }

    func write(id: UInt64, into buffer: inout ByteBuffer) {
        buffer.writeJSONObject { command in
            command.field("id", int: id)
            switch self {
            case .connect(let token, let name, let subs):
                command.object("connect") { Self.writeConnectParams(token: token, name: name, subs: subs, into: &$0) }
            case .subscribe(let channel, let since, let token):
                command.object("subscribe") { params in
                    params.field("channel", string: channel)
                    if let since { params.object("since") { Self.writePosition(since, into: &$0) } }
                    if let token { params.field("token", string: token) }
                }
            case .subRefresh(let channel, let token):
                command.object("subRefresh") { params in
                    params.field("channel", string: channel)
                    params.field("token", string: token)
                }
            case .unsubscribe(let channel):
                command.object("unsubscribe") { $0.field("channel", string: channel) }
            case .publish(let channel, let data, let idempotencyKey):
                command.object("publish") { params in
                    params.field("channel", string: channel)
                    params.field("data", raw: data)
                    if let idempotencyKey { params.field("idempotencyKey", string: idempotencyKey) }
                }
            case .history(let channel, let since, let limit, let reverse):
                command.object("history") { params in
                    params.field("channel", string: channel)
                    if let since { params.object("since") { Self.writePosition(since, into: &$0) } }
                    if let limit { params.field("limit", int: limit) }
                    if reverse { params.field("reverse", bool: true) }
                }
            case .presence(let channel):
                command.object("presence") { $0.field("channel", string: channel) }
            case .presenceStats(let channel):
                command.object("presenceStats") { $0.field("channel", string: channel) }
            case .ping:
                command.object("ping") { _ in }
            case .refresh(let token):
                command.object("refresh") { $0.field("token", string: token) }
            }
        }
    }

    /// The command's size on the wire with the longest id, to check against the node's limit.
    var encodedSize: Int {
        var buffer = ByteBuffer()
        self.write(id: UInt64(UInt32.max), into: &buffer)
        return buffer.readableBytes
    }

    /// Whether the command, with any id, is at most `limit` bytes: a cheap bound first (each string
    /// byte at most six when escaped), the command written out only when the bound is over it.
    func fits(_ limit: Int) -> Bool {
        self.sizeBound <= limit || self.encodedSize <= limit
    }

    private var sizeBound: Int {
        func text(_ string: String?) -> Int { string.map { 6 * $0.utf8.count + 2 } ?? 0 }
        func position(_ position: StreamPosition?) -> Int { position.map { 40 + text($0.epoch) } ?? 0 }
        let overhead = 128
        switch self {
        case .connect(let token, let name, let subs):
            return overhead + text(token) + text(name) + text(SwitchboardVersion.current)
                + subs.reduce(0) { $0 + 8 + text($1.channel) + position($1.since) }
        case .subscribe(let channel, let since, let token):
            return overhead + text(channel) + position(since) + text(token)
        case .subRefresh(let channel, let token):
            return overhead + text(channel) + text(token)
        case .unsubscribe(let channel), .presence(let channel), .presenceStats(let channel):
            return overhead + text(channel)
        case .publish(let channel, let data, let idempotencyKey):
            return overhead + text(channel) + data.bytes.readableBytes + text(idempotencyKey)
        case .history(let channel, let since, _, _):
            return overhead + 40 + text(channel) + position(since)
        case .ping:
            return overhead
        case .refresh(let token):
            return overhead + text(token)
        }
    }

    static func writePosition(_ position: StreamPosition?, into object: inout JSONObjectWriter) {
        guard let position else { return }
        object.field("offset", int: position.offset)
        object.field("epoch", string: position.epoch)
    }
}
