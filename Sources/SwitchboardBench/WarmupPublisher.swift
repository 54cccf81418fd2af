import NIOCore

/// Proves every subscription live end to end before measuring (as wsbench
/// does): every 200 ms it sends a seq-0 publication to up to 500 channels,
/// rotating through all of them, until stopped. Subscribers count the first
/// seq-0 publication they see.
final class WarmupPublisher {
    private let endpoint: any PublishEndpoint
    private let eventLoop: any EventLoop
    private let configuration: BenchConfiguration
    private var round = 0
    private var stopped = false

    init(endpoint: any PublishEndpoint, eventLoop: any EventLoop, configuration: BenchConfiguration) {
        self.endpoint = endpoint
        self.eventLoop = eventLoop
        self.configuration = configuration
    }

    func start() { self.tick() }

    func stop() { self.stopped = true }

    private func tick() {
        // bounded: one round per 200 ms for at most the run's timeout
        guard !self.stopped, Double(self.round) * 0.2 <= self.configuration.timeout else { return }
        let channels = self.configuration.channelCount
        let perRound = min(channels, 500)
        for i in 0..<perRound {
            guard self.endpoint.canPublish else { break }
            self.endpoint.publish(
                channel: self.configuration.channelName(self.round * perRound + i),
                seq: 0,
                source: nil,
                size: self.configuration.payloadSize
            )
        }
        self.endpoint.flush()
        self.round += 1
        self.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(200)) { self.tick() }
    }
}

@available(*, unavailable)
extension WarmupPublisher: Sendable {}
