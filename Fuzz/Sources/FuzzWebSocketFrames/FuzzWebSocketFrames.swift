import NIOCore
import NIOEmbedded
import NIOWebSocket
@_spi(Fuzzing) import SwitchboardServer

/// Arbitrary bytes after the handshake, through the real frame decoder, frame
/// handler and client session of a node: never crashes, never leaks (LeakSanitizer).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    FuzzingSupport.feedWebSocketSession(Array(bytes))
    return 0
}
