import NIOCore
import NIOHTTP1
import SwitchboardCore

/// A complete HTTP response to write.
struct HTTPResponse: Sendable {
    var status: HTTPResponseStatus
    var contentType: String
    var body: ByteBuffer
    var headers: [(String, String)] = []

    static func json(_ status: HTTPResponseStatus = .ok, _ body: ByteBuffer) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: body)
    }

    static func json(_ status: HTTPResponseStatus = .ok, _ text: String) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: ByteBuffer(string: text))
    }

    static func text(_ status: HTTPResponseStatus, _ text: String) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "text/plain; charset=utf-8", body: ByteBuffer(string: text + "\n"))
    }

    /// `{"error": {"code", "message"}}` (and `"temporary": true` for a temporary code) with an
    /// HTTP status; the code is the protocol's (docs/protocol.md), by default the one the status
    /// stands for.
    static func error(_ status: HTTPResponseStatus, _ message: String, code: SwitchboardError.Code? = nil) -> HTTPResponse {
        let code = code ?? Self.protocolCode(for: status)
        var body = ByteBuffer()
        body.writeJSONObject { answer in
            answer.object("error") { error in
                error.field("code", int: code.rawValue)
                error.field("message", string: message)
                if code.isTemporary { error.field("temporary", bool: true) }
            }
        }
        return .json(status, body)
    }

    /// The protocol error code an HTTP status stands for when the caller names none.
    static func protocolCode(for status: HTTPResponseStatus) -> SwitchboardError.Code {
        switch status {
        case .payloadTooLarge, .tooManyRequests: return .limitExceeded
        case .serviceUnavailable, .internalServerError: return .internalError
        case .unauthorized: return .unauthorized
        default: return .badRequest
        }
    }
}

extension HTTPRequestHead {
    /// The token of an `Authorization: Bearer` header, if the request has one.
    var bearerToken: String? {
        guard let value = self.headers.first(name: "authorization") else { return nil }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1])
    }
}
