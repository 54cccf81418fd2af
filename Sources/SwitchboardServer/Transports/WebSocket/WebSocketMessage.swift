import NIOCore

/// A complete WebSocket data message (all fragments joined, text validated as UTF-8).
struct WebSocketMessage {
    var isText: Bool
    var data: ByteBuffer
}

/// Asks the frame handler to start the closing handshake with a code.
struct WebSocketCloseRequest {
    var code: UInt16
    var reason: String
}
