import Dispatch
import Foundation

/// SIGTERM and SIGINT for `switchboard balance`, which drains on the first and exits on the
/// second (`serve` runs the node in a swift-service-lifecycle `ServiceGroup` instead).
enum SignalDrain {
    /// SIGTERM and SIGINT as a stream (the sources must be kept alive by the caller).
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
}
