import NIOCore
import SwitchboardCore

/// One JSON message on its way to a client: the payload, with its WebSocket
/// frame header written once into room reserved in front of it.
///
/// A publication becomes one of these once, on the hub, and the same bytes
/// go to every subscriber whatever its transport: `WebSocketOutput` steps back
/// over the header and sends the frame, the SSE and collecting outputs send
/// the payload. Both are views of one buffer, so neither copies nor parses.
struct OutboundMessage: Sendable {
    /// The JSON text; the frame header sits just before its reader index.
    let payload: ByteBuffer

    /// Builds a message whose JSON `body` writes.
    init(allocator: ByteBufferAllocator, capacity: Int = 256, _ body: (inout ByteBuffer) -> Void) {
        var buffer = allocator.buffer(capacity: capacity + WebSocketFrameBuilder.headerRoom)
        buffer.moveWriterIndex(forwardBy: WebSocketFrameBuilder.headerRoom)
        buffer.moveReaderIndex(forwardBy: WebSocketFrameBuilder.headerRoom)
        body(&buffer)
        WebSocketFrameBuilder.writeTextHeader(into: &buffer)
        self.payload = buffer
    }

    /// A message holding a copy of `json`.
    init(copying json: ByteBuffer, allocator: ByteBufferAllocator) {
        var json = json
        self.init(allocator: allocator, capacity: json.readableBytes) { $0.writeBuffer(&json) }
    }

    /// A publication push (`{"channel":…,"pub":…}`): what the hub encodes once per publication
    /// for every subscriber on the node.
    static func publication(channel: String, _ publication: Publication, allocator: ByteBufferAllocator) -> OutboundMessage {
        OutboundMessage(allocator: allocator, capacity: publication.data.readableBytes + 96) {
            $0.writePublicationPush(channel: channel, publication)
        }
    }

    /// Bytes of JSON text.
    var byteCount: Int { self.payload.readableBytes }
}
