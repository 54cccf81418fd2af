public import Foundation
public import Logging
public import NIOCore
public import NIOPosix
public import SwitchboardCore

/// A Switchboard client for Swift programs (services, command-line tools, apps on Linux and
/// macOS): one WebSocket connection to a node or a balancer, kept up by itself.
///
/// It reconnects with capped, jittered backoff after any loss the protocol calls temporary (codes
/// 3000-3499, a network failure, a silent connection) and stops for good on the others (3500-3999,
/// 1002, 1007), as the protocol's close-code table says. On every new connection it subscribes
/// again from the last position it delivered in each channel, so a subscriber gets each
/// publication once, in order, across reconnects and across nodes; when the node cannot give
/// back what was missed, the subscription says so (`.unrecovered`) instead of skipping silently.
///
/// ```swift
/// let client = SwitchboardClient(configuration: try .init(url: "ws://127.0.0.1:8000/ws"))
/// client.connect()
/// let chat = try await client.subscribe("chat:lobby")
/// Task { for await event in chat { if case .publication(let p) = event { print(p.json) } } }
/// try await client.publish("chat:lobby", json: #"{"text":"hi"}"#)
/// await client.close()
/// ```
///
/// All state lives on one event loop; every method may be called from any thread or task. Call
/// `close()` when done: until then the client keeps (re)connecting.
public final class SwitchboardClient: Sendable {
    /// The loop the client's connection and state live on.
    public let eventLoop: any EventLoop
    private let driver: NIOLoopBoundBox<ClientDriver>

    /// A client for `configuration`, on a loop of `eventLoopGroup`. Nothing happens before `connect()`.
    public init(
        configuration: SwitchboardClientConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "switchboard.client")
    ) {
        let loop = eventLoopGroup.next()
        self.eventLoop = loop
        self.driver = NIOLoopBoundBox.makeBoxSendingValue(
            ClientDriver(eventLoop: loop, configuration: configuration, logger: logger), eventLoop: loop)
    }

    // MARK: connection

    /// Starts connecting; from then on the client reconnects by itself until `close()` or a code that
    /// forbids it. Does nothing while connecting or connected; while waiting to reconnect, tries now.
    public func connect() {
        self.onLoop { $0.connect() }
    }

    /// Waits until the client is connected (now or after the attempt under way) and gives the node's
    /// connect result. Throws `ClientError.closed` when the client is, or becomes, closed.
    @discardableResult
    public func connected() async throws -> ConnectResult {
        try await self.eventLoop.flatSubmit { self.driver.value.waitUntilConnected() }.get()
    }

    /// Closes the connection and stops reconnecting. Requests still waiting fail with
    /// `ClientError.closed`, and every subscription ends. `connect()` starts again, with no
    /// subscriptions.
    public func close() async {
        try? await self.eventLoop.submit { self.driver.value.close() }.get()
    }

    /// The connection's state now, then every change, as long as the stream is iterated.
    public func stateUpdates() async -> AsyncStream<ConnectionState> {
        (try? await self.eventLoop.submit { self.driver.value.observeState() }.get())
            ?? AsyncStream { $0.finish() }
    }

    /// The connection's state now.
    public var state: ConnectionState {
        get async {
            (try? await self.eventLoop.submit { self.driver.value.state }.get()) ?? .closed(code: nil, reason: "event loop shut down")
        }
    }

    /// Answers the client is waiting for on its connection (tests: bounded whatever the node does).
    var answersAwaited: Int {
        get async { (try? await self.eventLoop.submit { self.driver.value.inFlight.count }.get()) ?? 0 }
    }

    // MARK: subscriptions

    /// Subscribes to `channel` (now, or when connected). `since`: a position this program saved
    /// earlier, to receive what came after it first (then `.subscribed` says whether all of it did).
    /// `getToken`: for channels that need a subscription token (`$` channels, namespaces that ask for
    /// one), called with the channel's name before each subscribe and before the token expires
    /// (then sent with `subRefresh`). Throws `ClientError.invalidRequest` for an invalid channel name
    /// or a channel already followed.
    public func subscribe(
        _ channel: String, since: StreamPosition? = nil, getToken: (@Sendable (_ channel: String) async throws -> String)? = nil
    ) async throws -> ClientSubscription {
        let events = try await self.eventLoop.submit { () throws -> AsyncStream<SubscriptionEvent> in
            try self.driver.value.subscribe(channel, since: since, getToken: getToken)
        }.get()
        return ClientSubscription(channel: channel, events: events)
    }

    /// Stops following `channel`; its subscription's events end with `.ended(code: 0, …)`.
    public func unsubscribe(_ channel: String) async {
        try? await self.eventLoop.submit { self.driver.value.unsubscribe(channel) }.get()
    }

    // MARK: requests

    /// Publishes `json` (one JSON value, checked here) in `channel`; the publication's position when
    /// the channel keeps history. With an `idempotencyKey`, a retry after `connectionLost` is not
    /// published twice.
    @discardableResult
    public func publish(_ channel: String, json: String, idempotencyKey: String? = nil) async throws -> StreamPosition? {
        let data: RawJSON
        do {
            data = try RawJSON(validating: Array(json.utf8))
        } catch {
            throw ClientError.invalidRequest("data is not one JSON value: \(error)")
        }
        return try await self.publish(channel, data: data, idempotencyKey: idempotencyKey)
    }

    /// Publishes `value` encoded as JSON.
    @discardableResult
    public func publish<Value: Encodable>(
        _ channel: String, _ value: Value, idempotencyKey: String? = nil, encoder: JSONEncoder = JSONEncoder()
    ) async throws -> StreamPosition? {
        let bytes = try encoder.encode(value)
        let data: RawJSON
        do {
            data = try RawJSON(validating: bytes)
        } catch {
            throw ClientError.invalidRequest("the encoder wrote no JSON value: \(error)")
        }
        return try await self.publish(channel, data: data, idempotencyKey: idempotencyKey)
    }

    /// Publishes JSON that is already checked.
    @discardableResult
    public func publish(_ channel: String, data: RawJSON, idempotencyKey: String? = nil) async throws -> StreamPosition? {
        let result = try await self.request(.publish(channel: channel, data: data, idempotencyKey: idempotencyKey))
        return SubscribeResult(json: result).position
    }

    /// Up to `limit` publications of `channel`'s history after `since` (from the oldest kept when
    /// nil), oldest first, or newest first with `reverse`.
    public func history(
        _ channel: String, since: StreamPosition? = nil, limit: Int? = nil, reverse: Bool = false
    ) async throws -> ClientHistory {
        let result = try await self.request(.history(channel: channel, since: since, limit: limit, reverse: reverse))
        let parsed = SubscribeResult(json: result)
        return ClientHistory(publications: parsed.publications, position: parsed.position)
    }

    /// Who is subscribed to `channel`, by client id.
    public func presence(_ channel: String) async throws -> [String: ClientInfo] {
        let result = try await self.request(.presence(channel: channel))
        var clients: [String: ClientInfo] = [:]
        for member in result["clients"]?.objectValue?.members ?? [] {
            if let info = ClientInfo(json: member.value) { clients[member.key] = info }
        }
        return clients
    }

    /// How many connections and distinct users are subscribed to `channel`.
    public func presenceStats(_ channel: String) async throws -> PresenceStats {
        let result = try await self.request(.presenceStats(channel: channel))
        return PresenceStats(clients: result["clients"]?.intValue ?? 0, users: result["users"]?.intValue ?? 0)
    }

    /// One application-level round trip to the node.
    public func ping() async throws {
        _ = try await self.request(.ping)
    }

    private func request(_ command: OutgoingCommand) async throws -> JSONObject {
        try await self.eventLoop.flatSubmit { self.driver.value.request(command) }.get()
    }

    private func onLoop(_ body: @escaping @Sendable (ClientDriver) -> Void) {
        let driver = self.driver
        if self.eventLoop.inEventLoop {
            body(driver.value)
        } else {
            self.eventLoop.execute { body(driver.value) }
        }
    }
}
