import Dispatch
import Foundation
import Logging
import SwitchboardServer

/// SIGTERM or SIGINT starts a graceful drain and returns when it is over; a second signal exits at once.
enum SignalDrain {
    /// SIGTERM and SIGINT as a stream (the sources must be kept alive by the caller); `serve` and
    /// `balance` both drain on the first and exit on the second.
    static func signalStream() -> (stream: AsyncStream<Int32>, sources: [any DispatchSourceSignal]) {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        let queue = DispatchQueue(label: "switchboard.signals")
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { continuation.yield(sig) }
            source.resume()
            sources.append(source)
        }
        return (stream, sources)
    }

    static func waitForSignalAndDrain(node: SwitchboardNode, logger: Logger) async {
        let (stream, sources) = Self.signalStream()
        var iterator = stream.makeAsyncIterator()
        guard let first = await iterator.next() else { return }
        logger.info("signal received, draining", metadata: ["signal": "\(first)"])
        let drain = Task {
            await node.drain()
            await node.stop()
        }
        let second = Task {
            if let sig = await iterator.next() {
                logger.warning("second signal, exiting now", metadata: ["signal": "\(sig)"])
                exit(1)
            }
        }
        await drain.value
        second.cancel()
        withExtendedLifetime(sources) {}
    }
}
