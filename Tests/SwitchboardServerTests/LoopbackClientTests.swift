import NIOCore
import NIOPosix
@testable import SwitchboardServer
import Testing

/// The test client's own read deadline: a frame that never comes fails the test, it does not hang the suite.
@Suite("LoopbackClient read deadlines", .timeLimit(.minutes(1)))
struct LoopbackClientTests {
    @Test("a read with nothing to read throws LoopbackReadTimeout at its deadline, and a later read still works")
    func readTimesOut() async throws {
        try await LoopbackNode.run { node, port, group in
            var ws = try await LoopbackClient.connect(port: port, group: group)
            #expect(try await ws.upgrade() == 101)
            // Connected, nothing sent: the node sends nothing either.
            let started = ContinuousClock.now
            await #expect(throws: LoopbackReadTimeout.self) {
                _ = try await ws.readMore(timeout: .milliseconds(200))
            }
            // Not before its deadline; no upper bound, which a stalled test process would break.
            #expect(ContinuousClock.now - started >= .milliseconds(200))
            // The stale deadline is ignored: the next read gets the connect reply.
            try await ws.send(TestFrames.text(#"{"id":1,"connect":{}}"#))
            #expect(try await ws.readMessage()?.contains(#""client":"#) == true)
        }
    }
}
