import NIOCore
import NIOPosix

/// Runs `body` with a fresh event loop group and shuts the group down whether `body` returned or
/// threw, so a failing test leaves no threads or connections behind.
func withEventLoopGroup<Result>(
    threads: Int = 1,
    _ body: (MultiThreadedEventLoopGroup) async throws -> Result
) async throws -> Result {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    let result: Result
    do {
        result = try await body(group)
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
    try await group.shutdownGracefully()
    return result
}
