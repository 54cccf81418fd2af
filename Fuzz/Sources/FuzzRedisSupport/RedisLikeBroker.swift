import NIOCore
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@_spi(Harness) import SwitchboardRedis

/// A broker that behaves like `RedisBroker` on offsets and positions, without a Redis server:
/// the memory broker stores, and every history read goes through `RedisBroker`'s own range
/// arithmetic (`streamRange`: the first stream id after `since`, nothing after `Int64.max`) and
/// its stream-id decoding, exactly as the Redis broker turns a client's position into `XRANGE`
/// arguments and the reply back into offsets. Epochs are a fixed `e` (the memory broker draws
/// random ones), so that fuzzed positions can name the live epoch and reach recovery.
package final class RedisLikeBroker: ForwardingBroker, @unchecked Sendable {
    // @unchecked: no state of its own beyond the forwarding broker's; used on the embedded loop's thread only.
    package static let epoch = "e"

    static func fixed(_ position: StreamPosition) -> StreamPosition {
        position.epoch.isEmpty ? position : StreamPosition(offset: position.offset, epoch: Self.epoch)
    }

    package override func start(eventHandler: @escaping @Sendable (BrokerEvent) -> Void) -> EventLoopFuture<Void> {
        super.start { event in
            if case .publication(let channel, let publication, let epoch) = event {
                eventHandler(.publication(channel: channel, publication, epoch: epoch.isEmpty ? epoch : Self.epoch))
            } else {
                eventHandler(event)
            }
        }
    }

    package override func publish(_ request: PublishRequest) -> EventLoopFuture<PublishResult> {
        self.inner.publish(request).map { result in
            // Redis offsets are signed 64-bit: the publish reply is read with UInt64(exactly:) of an Int64.
            check(result.position.offset <= UInt64(Int64.max), "offset \(result.position.offset) Redis cannot hold")
            return PublishResult(position: Self.fixed(result.position), duplicate: result.duplicate)
        }
    }

    package override func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> {
        // What RedisBroker.history sends: the real arithmetic, with this client's numbers.
        let range = checkRange(sinceOffset: query.sinceOffset, limit: query.limit)
        // What the history script does with it: XRANGE from `first`, at most `count` (-1: all).
        let since: UInt64?
        if range.first == "-" {
            since = nil
        } else {
            guard let first = RedisBroker.offset(ofStreamID: range.first), first > 0 else {
                fatalError("history range starts at an id Redis cannot read: \(range.first)")
            }
            since = first - 1
        }
        check(since == query.sinceOffset || range.count == 0, "range \(range) does not start after \(String(describing: query.sinceOffset))")
        let limit = range.count < 0 ? query.limit : Int(range.count)
        return self.inner.history(HistoryQuery(channel: query.channel, sinceOffset: since, limit: limit, reverse: query.reverse))
            .map { result in
                // The reply comes back as stream ids `<offset>-0`, read by RedisBroker's decoder.
                let publications = result.publications.map { publication -> Publication in
                    var read = publication
                    guard let offset = RedisBroker.offset(ofStreamID: "\(publication.offset)-0") else {
                        fatalError("stream id of offset \(publication.offset) does not read back")
                    }
                    read.offset = offset
                    return read
                }
                check(publications.count <= max(query.limit, 0) || query.limit < 0, "\(publications.count) publications for limit \(query.limit)")
                if let since = query.sinceOffset {
                    check(publications.allSatisfy { $0.offset > since }, "history after \(since) returned an older publication")
                }
                return HistoryResult(publications: publications, position: Self.fixed(result.position))
            }
    }

    package override func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void> {
        // What RedisBroker sends as the TTL of the presence keys.
        checkWhole(ttl * 2)
        return self.inner.addPresence(channel: channel, clients: clients, ttl: ttl)
    }
}
