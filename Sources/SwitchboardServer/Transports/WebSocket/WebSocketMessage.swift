public import NIOCore

/// A complete WebSocket data message (all fragments joined, text validated as UTF-8).
///
/// What `WebSocketFrameHandler` passes on; visible to harnesses (`@_spi(Harness)`) so that a
/// benchmark can stand where the session stands.
///
/// An enum over the payload rather than a struct with a flag: the case lives in the buffer's
/// spare bits, so a message is as small as a `ByteBuffer` and travels in `NIOAny`'s inline
/// storage. A struct one byte larger was boxed on the heap for every message a client sent.
@_spi(Harness)
public enum WebSocketMessage {
    case text(ByteBuffer)
    case binary(ByteBuffer)

    @_spi(Harness) public init(isText: Bool, data: ByteBuffer) {
        self = isText ? .text(data) : .binary(data)
    }

    @_spi(Harness) public var isText: Bool {
        if case .text = self { return true }
        return false
    }

    @_spi(Harness) public var data: ByteBuffer {
        switch self {
        case .text(let data), .binary(let data): return data
        }
    }
}

/// Asks the frame handler to start the closing handshake with a code.
struct WebSocketCloseRequest {
    var code: UInt16
    var reason: String
}
