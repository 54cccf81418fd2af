import Foundation
import NIOCore
import NIOHTTP1

/// The client's end of an SSE stream: sends `POST /sse` with the connect params the driver gives
/// (token, name, subscriptions with their positions) and hands each event's data to the driver as a
/// message from the node. An answer other than `200 text/event-stream` ends the attempt with its
/// status and the start of its body (a draining node's `503`, a proxy's `404`); so does an event
/// over the client's `maximumIncomingMessageSize`.
final class SSEStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private enum State {
        case requesting
        case streaming(EventStreamParser)
        case refused(status: UInt, body: ByteBuffer)
        case ended(reason: String)
    }

    private let driver: ClientDriver
    private let connection: SSEClientConnection
    private let generation: UInt64
    private let maximumEventSize: Int
    private var state = State.requesting

    init(driver: ClientDriver, connection: SSEClientConnection, generation: UInt64, maximumEventSize: Int) {
        self.driver = driver
        self.connection = connection
        self.generation = generation
        self.maximumEventSize = maximumEventSize
    }

    func channelActive(context: ChannelHandlerContext) {
        self.connection.stream = context.channel
        guard let body = self.driver.streamOpening(self.connection, generation: self.generation) else {
            context.close(promise: nil)
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: self.connection.endpoint.hostHeader)
        headers.add(name: "User-Agent", value: "switchboard-swift")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Accept", value: "text/event-stream")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: self.connection.endpoint.ssePath, headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (Self.unwrapInboundIn(data), self.state) {
        case (.head(let head), .requesting):
            let type = head.headers.first(name: "Content-Type")?.lowercased() ?? ""
            if head.status == .ok && type.hasPrefix("text/event-stream") {
                self.state = .streaming(EventStreamParser(maximumEventSize: self.maximumEventSize))
                self.driver.transportOpened(generation: self.generation)
            } else {
                self.state = .refused(status: head.status.code, body: ByteBuffer())
            }
        case (.body(let part), .streaming(var parser)):
            // The parser is taken out of the state while it works, so it is not copied.
            self.state = .requesting
            let events: [EventStreamParser.Event]
            do {
                events = try parser.push(part)
            } catch {
                self.state = .ended(reason: "an event over \(error.limit) bytes")
                context.close(promise: nil)
                return
            }
            self.state = .streaming(parser)
            for event in events {
                self.driver.received(event.data, generation: self.generation)
            }
            self.connection.flush()
        case (.body(var part), .refused(let status, var body)):
            let room = max(0, 300 - body.readableBytes)
            if let slice = part.readSlice(length: min(room, part.readableBytes)) { body.writeImmutableBuffer(slice) }
            self.state = .refused(status: status, body: body)
        case (.end, .refused(let status, let body)):
            self.state = .ended(reason: Self.refusal(status: status, body: body))
            context.close(promise: nil)
        case (.end, .streaming):
            self.state = .ended(reason: "stream ended")
            context.close(promise: nil)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let reason: String
        switch self.state {
        case .requesting: reason = "closed before the stream opened"
        case .streaming: reason = "stream ended"
        case .refused(let status, let body): reason = Self.refusal(status: status, body: body)
        case .ended(let why): reason = why
        }
        self.connection.close()
        self.driver.connectionClosed(code: nil, reason: self.connection.failure ?? reason, generation: self.generation)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .streaming = self.state { self.state = .ended(reason: "stream failed: \(error)") }
        if case .requesting = self.state { self.state = .ended(reason: "\(error)") }
        context.close(promise: nil)
    }

    static func refusal(status: UInt, body: ByteBuffer) -> String {
        let text = String(buffer: body).replacingOccurrences(of: "\n", with: " ").trimmingCharacters(in: .whitespaces)
        return "stream refused: HTTP \(status)\(text.isEmpty ? "" : " " + text)"
    }
}

@available(*, unavailable)
extension SSEStreamHandler: Sendable {}
