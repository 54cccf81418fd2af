public import NIOCore

/// A complete WebSocket data message (all fragments joined, text validated as UTF-8).
///
/// What `WebSocketFrameHandler` passes on; visible to harnesses (`@_spi(Harness)`) so that a
/// benchmark can stand where the session stands.
@_spi(Harness)
public struct WebSocketMessage {
    @_spi(Harness) public var isText: Bool
    @_spi(Harness) public var data: ByteBuffer
}

/// Asks the frame handler to start the closing handshake with a code.
struct WebSocketCloseRequest {
    var code: UInt16
    var reason: String
}
