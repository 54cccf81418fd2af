import Foundation
import NIOCore
import NIOPosix

/// One request to a node's HTTP API over a plain socket (`Connection: close`): status and body.
enum APIRequest {
    static func post(port: Int, method: String, body: String) async throws -> (status: Int, body: String) {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let request =
            "POST /api/\(method) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: apikey test-key\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            var response = ByteBuffer()
            for try await var chunk in inbound {
                response.writeBuffer(&chunk)
                if response.readableBytes > 1 << 20 { break }
            }
            let text = String(buffer: response)
            let status = text.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
            let responseBody = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            return (status, responseBody)
        }
    }
}
