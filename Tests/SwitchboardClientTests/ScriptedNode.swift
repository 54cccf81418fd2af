import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A fake node over loopback whose answers a test writes: it takes the WebSocket handshake, reads
/// the client's (masked) text frames, and hands each command to `script`, which gives the messages
/// to send back (in order, each in its own frame), or nil for the default: the `connect` result
/// (`ping` 0) for `connect`, an empty result for anything else. An empty array answers nothing (a
/// lost reply). Every command is logged, with when it came.
final class ScriptedNode: Sendable {
    /// One command the client sent.
    struct Command: Sendable {
        var id: UInt64
        /// `connect`, `subscribe`, `unsubscribe`, …
        var method: String
        /// Its params' `channel`, when it has one.
        var channel: String?
        /// Its params' `since`, as `offset:epoch`, when it has one.
        var since: String?
        /// The connection it came on (1 for the first).
        var connection: Int
        var received: ContinuousClock.Instant
    }

    typealias Script = @Sendable (Command) -> [String]?

    private let channel: any Channel
    private let accepted = NIOLockedValueBox(0)
    private let log = NIOLockedValueBox<[Command]>([])
    let port: Int

    /// Connections taken so far.
    var connections: Int { self.accepted.withLockedValue { $0 } }
    /// The commands received so far, oldest first.
    var commands: [Command] { self.log.withLockedValue { $0 } }

    init(script: @escaping Script) async throws {
        let accepted = self.accepted
        let log = self.log
        self.channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                let number = accepted.withLockedValue {
                    $0 += 1
                    return $0
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(number: number, log: log, script: script))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        self.port = self.channel.localAddress!.port!
    }

    func stop() async {
        try? await self.channel.close()
    }

    fileprivate final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        private let number: Int
        private let log: NIOLockedValueBox<[Command]>
        private let script: Script
        private var received = ByteBuffer()
        private var upgraded = false

        init(number: Int, log: NIOLockedValueBox<[Command]>, script: @escaping Script) {
            self.number = number
            self.log = log
            self.script = script
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = Self.unwrapInboundIn(data)
            self.received.writeBuffer(&bytes)
            if !self.upgraded {
                guard FakeNodeHandshake.answer(&self.received, context: context) else { return }
                self.upgraded = true
            }
            while let (opcode, payload) = self.nextFrame() {
                switch opcode {
                case 0x1:
                    for line in payload.split(separator: "\n") { self.handle(String(line), context: context) }
                case 0x8:
                    context.close(promise: nil)
                    return
                default:
                    break
                }
            }
            self.received.discardReadBytes()
        }

        /// The next whole frame the client sent (masked, as a client's are), unmasked.
        private func nextFrame() -> (opcode: UInt8, payload: String)? {
            var view = self.received
            guard let (first, second) = view.readMultipleIntegers(as: (UInt8, UInt8).self) else { return nil }
            var length = Int(second & 0x7F)
            if length == 126 {
                guard let extended = view.readInteger(as: UInt16.self) else { return nil }
                length = Int(extended)
            } else if length == 127 {
                guard let extended = view.readInteger(as: UInt64.self) else { return nil }
                length = Int(extended)
            }
            let mask = second & 0x80 != 0 ? view.readBytes(length: 4) : [0, 0, 0, 0]
            guard let mask, var payload = view.readBytes(length: length) else { return nil }
            for index in payload.indices { payload[index] ^= mask[index % 4] }
            self.received = view
            return (first & 0x0F, String(decoding: payload, as: UTF8.self))
        }

        private func handle(_ text: String, context: ChannelHandlerContext) {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any],
                let id = (object["id"] as? NSNumber)?.uint64Value,
                let method = object.keys.first(where: { $0 != "id" })
            else { return }
            let params = object[method] as? [String: Any]
            let since = (params?["since"] as? [String: Any]).map { "\($0["offset"] ?? ""):\($0["epoch"] ?? "")" }
            let command = Command(
                id: id, method: method, channel: params?["channel"] as? String, since: since, connection: self.number,
                received: .now)
            self.log.withLockedValue { $0.append(command) }
            let replies =
                self.script(command)
                ?? [
                    method == "connect"
                        ? #"{"id":\#(id),"result":{"client":"scripted-\#(self.number)","node":"scripted","ping":0,"pong":false}}"#
                        : #"{"id":\#(id),"result":{}}"#
                ]
            for reply in replies {
                var frame = ByteBuffer()
                let count = reply.utf8.count
                if count < 126 {
                    frame.writeMultipleIntegers(UInt8(0x81), UInt8(count))
                } else {
                    frame.writeMultipleIntegers(UInt8(0x81), UInt8(126), UInt16(count))
                }
                frame.writeString(reply)
                context.write(Self.wrapOutboundOut(frame), promise: nil)
            }
            context.flush()
        }
    }
}

@available(*, unavailable)
extension ScriptedNode.Handler: Sendable {}
