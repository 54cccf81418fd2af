import NIOCore
import NIOEmbedded
import RESP
import Testing

@testable import RedisClient

/// Replies matched to commands on an embedded channel: the decoder and the handler as a connection has them.
@Suite("Redis command handler")
struct RedisCommandHandlerTests {
    @Test("a RESP3 attribute before a reply, or a push between replies, is not taken as a reply: each command gets its own")
    func attributesAndPushesAreNotReplies() throws {
        let channel = EmbeddedChannel()
        final class Box: @unchecked Sendable { var replies: [String] = [] }  // the embedded loop is this thread
        let box = Box()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPTokenDecoder()))
        try channel.pipeline.syncOperations.addHandler(
            RedisCommandHandler(commandTimeout: .seconds(5)) { _, result in
                switch result {
                case .success(let token): box.replies.append(token.string ?? "\(token)")
                case .failure(let error): box.replies.append("error: \(error)")
                }
            })
        let replies = (0..<3).map { _ in RedisPendingReply(receiver: .callback { _ in }) }
        try channel.writeOutbound(RedisCommandBatch(bytes: ByteBuffer(string: "commands"), replies: replies))
        // An attribute map before the first reply, a push after it, then two replies.
        try channel.writeInbound(ByteBuffer(string: "|1\r\n+key-popularity\r\n:7\r\n+first\r\n>2\r\n+invalidate\r\n+k\r\n+second\r\n+third\r\n"))
        #expect(box.replies == ["first", "second", "third"])
        _ = try? channel.finish()
    }
}
