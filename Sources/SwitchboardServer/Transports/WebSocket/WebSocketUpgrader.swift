import Crypto
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The RFC 6455 handshake for `/ws` and `/echo`.
///
/// NIO's own upgrader installs its (unremovable) frame encoder; the data
/// plane writes finished frame bytes instead (one buffer per publication for
/// every subscriber), and `WebSocketFrameHandler` reads frames itself, so
/// this upgrader installs only the node's handlers.
final class WebSocketUpgrader: HTTPServerProtocolUpgrader, Sendable {
    let supportedProtocol = "websocket"
    let requiredUpgradeHeaders: [String] = []

    private let accepts: @Sendable (HTTPRequestHead) -> Bool
    private let installHandlers: @Sendable (any Channel, HTTPRequestHead) throws -> Void

    /// Errors that refuse an upgrade (the request then gets an HTTP answer).
    enum UpgradeError: Error {
        case invalidHeaders
        case refused
    }

    init(
        accepts: @escaping @Sendable (HTTPRequestHead) -> Bool,
        installHandlers: @escaping @Sendable (any Channel, HTTPRequestHead) throws -> Void
    ) {
        self.accepts = accepts
        self.installHandlers = installHandlers
    }

    func buildUpgradeResponse(
        channel: any Channel,
        upgradeRequest: HTTPRequestHead,
        initialResponseHeaders: HTTPHeaders
    ) -> EventLoopFuture<HTTPHeaders> {
        // Exactly one field of each, read as written (not in NIO's canonical form, which splits on
        // commas and drops empty parts: `Sec-WebSocket-Key: k,` or an empty key field beside a real
        // one read as the one key `k` there, while a proxy in front sees another value; both found
        // by `FuzzNodeHandshake`). A key is a token, never a list: one with a comma is refused.
        let keyFields = upgradeRequest.headers["sec-websocket-key"]
        let versionFields = upgradeRequest.headers["sec-websocket-version"]
        guard keyFields.count == 1, versionFields.count == 1,
            versionFields[0].trimmingFieldWhitespace() == "13"
        else {
            return channel.eventLoop.makeFailedFuture(UpgradeError.invalidHeaders)
        }
        let key = keyFields[0].trimmingFieldWhitespace()
        guard !key.isEmpty, !key.contains(",") else {
            return channel.eventLoop.makeFailedFuture(UpgradeError.invalidHeaders)
        }
        // NIO's upgrade handler calls this for any request with an `Upgrade` header. RFC 6455 4.2.1
        // asks for an HTTP/1.1 GET with `Connection: upgrade` too, as the router's shortcut does: a
        // proxy in front that did not see those would not know the connection changed protocols,
        // and would go on reading WebSocket frames as HTTP requests. (A key that is not 16 bytes of
        // base64 is still taken here, as before: harmless, and balancers of earlier releases
        // health-check with a 17-byte one.)
        guard upgradeRequest.method == .GET, upgradeRequest.version.major == 1, upgradeRequest.version.minor >= 1,
            upgradeRequest.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "upgrade" })
        else {
            return channel.eventLoop.makeFailedFuture(UpgradeError.invalidHeaders)
        }
        // A handshake is a GET without a body (RFC 6455 4.1). One that announces a body is refused
        // here, before NIO's upgrade handler starts waiting for the request's end: while it waits it
        // keeps a closure that holds the handler itself and the connection's context, and a client
        // that closed before sending the body left that cycle, with the whole pipeline, behind
        // (5.5 KB per request on a release build; found by the `FuzzNodeHandshake` fuzz target).
        guard !Self.announcesBody(upgradeRequest.headers) else {
            return channel.eventLoop.makeFailedFuture(UpgradeError.invalidHeaders)
        }
        guard self.accepts(upgradeRequest) else {
            return channel.eventLoop.makeFailedFuture(UpgradeError.refused)
        }
        var headers = initialResponseHeaders
        headers.replaceOrAdd(name: "Upgrade", value: "websocket")
        headers.replaceOrAdd(name: "Connection", value: "upgrade")
        headers.add(name: "Sec-WebSocket-Accept", value: Self.acceptValue(forKey: key))
        return channel.eventLoop.makeSucceededFuture(headers)
    }

    func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        let channel = context.channel
        return channel.eventLoop.makeCompletedFuture {
            try self.installHandlers(channel, upgradeRequest)
        }
    }

    /// Whether a request head says a body follows: any `Transfer-Encoding`, or a `Content-Length`
    /// other than `0`.
    static func announcesBody(_ headers: HTTPHeaders) -> Bool {
        if headers.contains(name: "transfer-encoding") { return true }
        return headers[canonicalForm: "content-length"].contains { $0 != "0" }
    }

    /// `Sec-WebSocket-Accept` for a client key (RFC 6455 section 4.2.2).
    static func acceptValue(forKey key: String) -> String {
        var buffer = ByteBuffer()
        Self.writeAcceptValue(forKey: key, into: &buffer)
        return String(buffer: buffer)
    }

    private static let acceptGUID: StaticString = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    private static let base64Alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    /// Writes `Sec-WebSocket-Accept` for `key` (base64 of SHA-1 of the key and the RFC's GUID)
    /// straight into `buffer`: every WebSocket connection makes one, so no string is joined, no
    /// array or `Data` made, and no base64 string built on the way.
    static func writeAcceptValue(forKey key: String, into buffer: inout ByteBuffer) {
        var sha1 = Insecure.SHA1()
        var key = key
        key.withUTF8 { sha1.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        sha1.update(bufferPointer: UnsafeRawBufferPointer(start: Self.acceptGUID.utf8Start, count: Self.acceptGUID.utf8CodeUnitCount))
        let digest = sha1.finalize()
        let alphabet = UnsafeBufferPointer(start: Self.base64Alphabet.utf8Start, count: 64)
        digest.withUnsafeBytes { bytes in
            // 20 bytes: six groups of three, then two bytes and one `=`.
            buffer.reserveCapacity(minimumWritableBytes: 28)
            var i = 0
            while i + 3 <= bytes.count {
                let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
                buffer.writeMultipleIntegers(
                    alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)])
                i += 3
            }
            switch bytes.count - i {
            case 1:
                let n = UInt32(bytes[i]) << 16
                buffer.writeMultipleIntegers(alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], UInt8(ascii: "="), UInt8(ascii: "="))
            case 2:
                let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
                buffer.writeMultipleIntegers(alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], UInt8(ascii: "="))
            default:
                break
            }
        }
    }
}
