import Logging
import NIOCore
import SwitchboardBroker
import SwitchboardCore

/// Messages between nodes: SSE commands forwarded to the node holding the stream, and the
/// server API's disconnects and unsubscribes for clients held anywhere.
extension Hub {
    /// Sends commands POSTed here to the node holding the SSE session; completes with that
    /// node's outcome, or 503 when it does not answer within `timeout`.
    func forwardSessionCommands(
        session: String,
        commands: String,
        to node: String,
        from thisNode: String,
        timeout: TimeAmount = .seconds(5)
    ) -> EventLoopFuture<SessionCommandOutcome> {
        let promise = self.eventLoop.makePromise(of: SessionCommandOutcome.self)
        self.eventLoop.execute {
            guard self.forwardsCommands else { return promise.succeed(.rejected(status: 503, message: "node stopping")) }
            self.nextCorrelation += 1
            let correlation = self.nextCorrelation
            let timer = self.eventLoop.scheduleTask(in: timeout) { () -> Void in
                guard let waiting = self.forwardedCommands.removeValue(forKey: correlation) else { return }
                waiting.promise.succeed(.rejected(status: 503, message: "the session's node did not answer"))
            }
            self.forwardedCommands[correlation] = (promise, timer)
            self.broker.sendControl(.sessionCommands(session: session, commands: commands, replyTo: thisNode, correlation: correlation), to: node)
                .hop(to: self.eventLoop).assumeIsolated().whenFailure { _ in
                    guard let waiting = self.forwardedCommands.removeValue(forKey: correlation) else { return }
                    waiting.timeout.cancel()
                    waiting.promise.succeed(.rejected(status: 503, message: "broker unavailable"))
                }
        }
        return promise.futureResult
    }

    /// Hub stop: answers every forward still waiting (503) and forwards no more.
    func stopForwarding() {
        self.forwardsCommands = false
        let waiting = self.forwardedCommands
        self.forwardedCommands.removeAll()
        for (_, forward) in waiting {
            forward.timeout.cancel()
            forward.promise.succeed(.rejected(status: 503, message: "node stopping"))
        }
    }

    func handleControl(_ message: ControlMessage) {
        switch message {
        case .sessionCommands(let session, let commands, let replyTo, let correlation):
            let broker = self.broker
            let answer: @Sendable (SessionCommandOutcome) -> Void = { outcome in
                let result: ControlMessage
                switch outcome {
                case .accepted(let count):
                    result = .sessionCommandsResult(correlation: correlation, status: 202, accepted: count, message: "")
                case .rejected(let status, let message):
                    result = .sessionCommandsResult(correlation: correlation, status: status, accepted: 0, message: message)
                }
                _ = broker.sendControl(result, to: replyTo)
            }
            guard let id = EventStreamSessionID(Substring(session)), let loop = self.directory.loop(of: id.client), loop < self.fanouts.count else {
                return answer(.rejected(status: 404, message: "unknown session"))
            }
            let fanout = self.fanouts[loop]
            fanout.eventLoop.execute {
                answer(fanout.sessionCommands(client: id.client, secret: id.secret, body: ByteBuffer(string: commands)))
            }
        case .sessionCommandsResult(let correlation, let status, let accepted, let message):
            guard let waiting = self.forwardedCommands.removeValue(forKey: correlation) else { return }
            waiting.timeout.cancel()
            waiting.promise.succeed(status == 202 ? .accepted(accepted) : .rejected(status: status, message: message))
        case .disconnect(let client, let user, let code, let reason):
            for target in self.directory.sessions(client: client, user: user) {
                self.send(.disconnect(client: target.client, DisconnectCode(code, reason)), toLoop: target.loop)
            }
        case .unsubscribe(let user, let channel):
            for target in self.directory.sessions(client: nil, user: user) {
                self.send(.unsubscribeClient(client: target.client, channel: channel, .server), toLoop: target.loop)
            }
        }
    }
}
