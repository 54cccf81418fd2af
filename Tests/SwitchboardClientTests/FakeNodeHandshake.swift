import Crypto
import Foundation
import NIOCore

/// The server side of a WebSocket handshake for the fake nodes of these tests (`SilentNode`,
/// `ScriptedNode`): once `received` holds a whole request head, writes the `101` for its key and
/// consumes the head.
enum FakeNodeHandshake {
    /// Whether the head was complete (and answered).
    static func answer(_ received: inout ByteBuffer, context: ChannelHandlerContext) -> Bool {
        let text = String(buffer: received)
        guard let end = text.range(of: "\r\n\r\n") else { return false }
        let key = text.components(separatedBy: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-key:") }
            .map { $0.dropFirst("sec-websocket-key:".count).trimmingCharacters(in: .whitespaces) } ?? ""
        let accept = Data(Insecure.SHA1.hash(data: Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
        let response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n"
        context.writeAndFlush(NIOAny(ByteBuffer(string: response)), promise: nil)
        received.moveReaderIndex(forwardBy: text.utf8.distance(from: text.startIndex, to: end.upperBound))
        return true
    }
}
