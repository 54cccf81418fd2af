import Logging
import NIOCore
import SwitchboardBroker
import SwitchboardCore

/// Ordered delivery: each publication through the channel's `ChannelSequencer`, gaps refilled
/// from history before anything newer, lost history reported (2500), and the periodic check
/// that no channel stays behind the broker.
extension HubShard {

    func handlePublication(_ name: String, _ publication: Publication, epoch: String) {
        guard let channel = self.channels[name] else { return }
        if publication.offset > 0 {
            switch channel.sequencer.receive(offset: publication.offset, epoch: epoch, time: publication.time) {
            case .deliver:
                if channel.fastPosition == nil || channel.fastPosition!.offset < publication.offset || channel.fastPosition!.epoch != epoch {
                    channel.fastPosition = channel.sequencer.lastLive
                }
            case .ignore:
                return  // delivered already (a broker repeat, or one read from history first)
            case .hold:
                channel.refillBuffer.append((publication, epoch))
                return
            case .refill(let last):
                self.metrics.gapsDetected += 1
                self.logger.info("gap in channel; refilling from history", metadata: [
                    "channel": "\(name)", "expected": "\(last.offset + 1)", "got": "\(publication.offset)",
                ])
                channel.refillBuffer = [(publication, epoch)]
                self.startRefill(name, from: last)
                return
            case .resync:
                // History was lost under us (broker data loss, expiry): everyone must learn it.
                self.logger.warning("channel epoch changed", metadata: ["channel": "\(name)"])
                self.insufficientState(name)
                channel.fastPosition = channel.sequencer.lastLive
                return
            case .reused:
                self.brokerLostPublications(name, epoch: epoch, seen: "offset \(publication.offset) again")
                return
            }
        }
        let message = OutboundMessage.publication(channel: name, publication, allocator: self.allocator)
        if !channel.joins.isEmpty {
            channel.buffer.append(BufferedPublication(offset: publication.offset, epoch: epoch, message: message))
        }
        self.broadcast(.publication(channel: name, offset: publication.offset, time: publication.time, message), to: channel)
    }

    /// Reads what came after `baseline` and delivers it in order before anything newer; tells
    /// everyone (2500) when history no longer holds it.
    func startRefill(_ name: String, from baseline: StreamPosition) {
        guard let channel = self.channels[name] else { return }
        channel.sequencer.beginRefill()
        let query = HistoryQuery(channel: name, sinceOffset: baseline.offset, limit: -1)
        self.broker.history(query).hop(to: self.eventLoop).whenComplete { result in
            guard let channel = self.channels[name], channel.sequencer.isRefilling else { return }
            let buffered = channel.refillBuffer
            channel.refillBuffer = []
            var missed: [Publication] = []
            var recovered = false
            if case .success(let history) = result, history.position.epoch == baseline.epoch {
                missed = history.publications
                // Wrapping arithmetic: offsets come from the broker (at most Int64.max from ours, but
                // whatever wrote to Redis), and a trap here would take the node down.
                let contiguous = missed.enumerated().allSatisfy { $0.element.offset == baseline.offset &+ 1 &+ UInt64($0.offset) }
                let reachesBuffer = buffered.first.map { first in
                    (missed.last?.offset ?? baseline.offset) >= first.0.offset &- 1 || first.0.offset == 0
                } ?? true
                recovered = contiguous && reachesBuffer && history.position.offset >= (missed.last?.offset ?? baseline.offset)
            }
            if case .success(let history) = result, history.position.epoch == baseline.epoch,
                history.position.offset < baseline.offset
            {
                // The broker's top is below what was delivered, in the same epoch: it lost publications
                // (a promoted replica after a failover, which is how the link came to be interrupted).
                // Its next offsets would reuse delivered ones; what was held is dropped with them.
                channel.sequencer.finishRefill(baseline: baseline, recovered: false)
                self.brokerLostPublications(
                    name, epoch: baseline.epoch, seen: "top \(history.position.offset) below \(baseline.offset) delivered")
                return
            }
            channel.sequencer.finishRefill(baseline: baseline, recovered: recovered)
            if recovered {
                for publication in missed { self.handlePublication(name, publication, epoch: baseline.epoch) }
            } else {
                if case .failure(let error) = result {
                    self.logger.warning("refill failed", metadata: ["channel": "\(name)", "error": "\(error)"])
                }
                self.insufficientState(name)
            }
            for (publication, epoch) in buffered { self.handlePublication(name, publication, epoch: epoch) }
        }
    }

    /// The broker lost its newest publications of the channel but kept it (a promoted replica, an
    /// old snapshot): offsets are reused in the same epoch, and positions in it would "recover"
    /// without what was lost. The epoch is renewed first, so that the subscribers told then (2500)
    /// resubscribe into `recovered: false`; the next publication becomes the baseline.
    func brokerLostPublications(_ name: String, epoch: String, seen: String) {
        guard let channel = self.channels[name] else { return }
        self.logger.warning("the broker lost publications of a channel; renewing its epoch", metadata: [
            "channel": "\(name)", "epoch": "\(epoch)", "seen": "\(seen)",
        ])
        channel.fastPosition = nil
        channel.sequencer.reset()
        self.broker.renewEpoch(channel: name, ifStill: epoch).hop(to: self.eventLoop).whenComplete { result in
            if case .failure(let error) = result {
                self.logger.warning("epoch renewal failed", metadata: ["channel": "\(name)", "error": "\(error)"])
            }
            self.insufficientState(name)
        }
    }

    /// Every local subscriber of the channel loses its subscription with 2500 and resubscribes with its
    /// position; joins under way read history again (what their reads answer may predate the change).
    func insufficientState(_ name: String) {
        guard let channel = self.channels[name] else { return }
        self.metrics.insufficientState += 1
        channel.markJoinReadsStale()
        self.broadcast(.unsubscribeChannel(channel: name, .insufficientState), to: channel)
    }

    /// Compares each channel's position at the broker with what was delivered here; a channel that
    /// stays behind for two checks in a row missed something (a silent broker link) and is refilled;
    /// a broker whose top stays below what was delivered lost publications (its epoch is renewed).
    func checkPositions() {
        // A bounded number of channels per interval, round robin, so that many channels never
        // turn into a burst of broker calls that stalls this loop (the probe watches the link as a whole).
        var checked = 0
        while checked < Self.positionChecksPerInterval {
            if self.positionCheckQueue.isEmpty {
                guard self.positionCheckRound < 1 else { break }
                self.positionCheckQueue = Array(self.channels.keys)
                self.positionCheckRound += 1
                if self.positionCheckQueue.isEmpty { break }
            }
            let name = self.positionCheckQueue.removeLast()
            guard let channel = self.channels[name], channel.keepsHistory, channel.link.isSubscribed, !channel.sequencer.isRefilling,
                let last = channel.sequencer.lastLive
            else { continue }
            checked += 1
            self.broker.history(HistoryQuery(channel: name, limit: 0)).hop(to: self.eventLoop).whenSuccess { history in
                guard let channel = self.channels[name], !channel.sequencer.isRefilling, let current = channel.sequencer.lastLive else { return }
                if history.position.epoch != current.epoch {
                    if channel.suspectEpoch == history.position.epoch {
                        channel.suspectEpoch = nil
                        self.insufficientState(name)
                    } else {
                        channel.suspectEpoch = history.position.epoch
                    }
                    return
                }
                channel.suspectEpoch = nil
                if history.position.offset < current.offset {
                    // The broker's top is below what was delivered here: it lost publications.
                    if channel.suspectLost == current {
                        channel.suspectLost = nil
                        self.brokerLostPublications(name, epoch: current.epoch, seen: "top \(history.position.offset) below \(current.offset)")
                    } else {
                        channel.suspectLost = current
                    }
                    return
                }
                channel.suspectLost = nil
                if history.position.offset > current.offset {
                    if let suspect = channel.suspectTop, suspect <= history.position.offset, current.offset < suspect, current == last {
                        channel.suspectTop = nil
                        self.logger.warning("channel behind the broker; refilling", metadata: ["channel": "\(name)"])
                        self.startRefill(name, from: current)
                    } else {
                        channel.suspectTop = history.position.offset
                    }
                } else {
                    channel.suspectTop = nil
                }
            }
        }
        self.positionCheckRound = 0
    }

    func broadcast(_ op: FanoutOp, to channel: HubChannel) {
        for (loop, count) in channel.loopCounts.enumerated() where count > 0 {
            self.enqueue(op, loop: loop)
        }
    }
}
