import Dispatch
import Foundation
import Logging
import SwitchboardServer

/// SIGTERM or SIGINT starts a graceful drain and returns when it is over; a second signal exits at once.
enum SignalDrain {
    static func waitForSignalAndDrain(node: SwitchboardNode, logger: Logger) async {
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
