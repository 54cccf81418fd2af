import NIOCore
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
import SwitchboardRedis
import TestProcesses
import Testing

/// The check both probes (the classic subscriber's and each shard subscriber's) must pass: with the
/// broker's Redis traffic through `proxy`, a subscriber connection silenced there (open, delivering
/// nothing) is found, rebuilt and reported (`.deliveryInterrupted`), and deliveries resume.
enum SilentSubscriberCheck {
    /// Starts `broker`, subscribes `channel`, sees a publication arrive, lets probes run for three
    /// seconds (nothing rebuilt; give the broker a probe interval of a second, so one slow round trip
    /// on a loaded machine is not taken for silence), silences the connections that sent `marker` (one), and expects the report
    /// and a later publication within 10 s each; shuts `broker` down.
    static func run(broker: RedisBroker, channel: String, proxy: FreezableTCPProxy, marker: String) async throws {
        let recorder = BrokerConformance.EventRecorder()
        try await broker.start { recorder.record($0) }.get()
        try await broker.subscribe(channel: channel).get()
        func publish(_ text: String) async throws {
            _ = try await broker.publish(
                PublishRequest(channel: channel, data: ByteBuffer(string: text), historySize: 10, historyTTL: 60)
            ).get()
        }
        @Sendable func received(_ text: String) -> Bool {
            recorder.publications(in: channel).contains { String(buffer: $0.0.data) == text }
        }
        try await publish("1")
        try await recorder.wait(seconds: 10) { _ in received("1") }
        try await Task.sleep(for: .seconds(3))
        #expect(!recorder.all.contains(BrokerEvent.deliveryInterrupted), "probes come back while the connection works")
        #expect(try await proxy.freezeConnections(thatSent: marker) == 1, "the subscriber connection, not the command one")
        try await publish("2")
        try await recorder.wait(seconds: 10) { $0.all.contains(BrokerEvent.deliveryInterrupted) }
        try await publish("3")
        try await recorder.wait(seconds: 10) { _ in received("3") }
        #expect(!received("2"), "published into the silent connection: the node refills it from history")
        try await broker.shutdown().get()
    }
}
