import NIOCore
import NIOEmbedded
import SwitchboardServerTesting

/// Arbitrary bytes after the handshake, through the real frame decoder, frame
/// handler and client session of a node: never crashes, never leaks (LeakSanitizer).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    guard let node = try? EmbeddedNode() else { fatalError("the embedded node did not start") }
    defer { node.shutdown() }
    guard let channel = try? node.openWebSocket() else { fatalError("no WebSocket session on the embedded node") }
    // Decoder errors close the connection: an expected outcome.
    _ = try? channel.writeInbound(ByteBuffer(bytes: bytes))
    node.loop.run()
    _ = channel.readAllOutbound()
    _ = try? channel.finish(acceptAlreadyClosed: true)
    return 0
}
