import Foundation
public import Logging
import NIOConcurrencyHelpers
public import NIOCore
public import SwitchboardCore

/// Everything a node verifies tokens with: configured keys, plus a JWKS from a file or one fixed URL
/// with its cache and fetches. Shared by every session of a node.
///
/// Verification runs synchronously on the caller's event loop. Only a token naming a `kid` that no
/// key has, with a JWKS URL configured, may wait for a fetch (at most one per 30 s), and then the
/// verification is retried once against the new set.
public final class TokenAuthority: Sendable {
    public let settings: TokenSettings
    /// The configured keys (HMAC and PEM) and the claim rules.
    public let verifier: JWTVerifier
    private let fetcher: JWKSFetcher?
    private let cache: NIOLockedValueBox<JWKSState>
    private let logger: Logger

    private struct JWKSState {
        var cache = JWKSCache()
        var inFlight: EventLoopFuture<Void>?
        var lifecycle = Lifecycle.idle
    }

    /// Whether JWKS fetches may start: before `start`, while refreshing, or never again after `stop`.
    private enum Lifecycle {
        case idle
        case refreshing(RepeatedTask)
        case stopped
    }

    /// Builds the keys: reads PEM and JWKS files, checks HMAC secret lengths (a short secret is a
    /// startup error naming the key, never its content). `legacySecret` is `tokenSecret` /
    /// `--token-secret`: one HS256 key without a `kid`.
    public init(settings: TokenSettings, legacySecret: String? = nil, logger: Logger) throws(TokenSettings.Error) {
        var keys: [VerificationKey] = []
        do {
            if let legacySecret, !legacySecret.isEmpty {
                keys.append(try VerificationKey(hmacSecret: Array(legacySecret.utf8), kid: nil, algorithms: [.hs256], source: "tokenSecret"))
            }
            for (index, key) in settings.hmac.enumerated() {
                keys.append(try VerificationKey(hmacSecret: Array(key.secret.utf8), kid: key.kid, algorithms: key.algorithms, source: "hmac[\(index)]"))
            }
            for key in settings.publicKeys {
                guard let data = FileManager.default.contents(atPath: key.file), data.count <= 65_536, let pem = String(data: data, encoding: .utf8) else {
                    throw TokenSettings.Error("tokens.publicKeys: cannot read \(key.file)")
                }
                keys.append(try VerificationKey(pem: pem, kid: key.kid, algorithms: key.algorithms, source: "pem:\(key.file)"))
            }
        } catch let error as VerificationKey.Error {
            throw TokenSettings.Error(error.description)
        } catch let error as TokenSettings.Error {
            throw error
        } catch {
            throw TokenSettings.Error("\(error)")
        }
        var kids = Set<String>()
        for key in keys {
            guard let kid = key.kid else { continue }
            guard kids.insert(kid).inserted else { throw TokenSettings.Error("tokens: kid \(kid) is used by two keys") }
        }
        if keys.count > 1 || (settings.jwks != nil && !keys.isEmpty) {
            for key in keys where key.kid == nil && keys.filter({ !$0.algorithms.isDisjoint(with: key.algorithms) }).count > 1 {
                throw TokenSettings.Error("tokens: with several keys of one family each needs a kid (\(key.source) has none)")
            }
        }
        var state = JWKSState()
        switch settings.jwks {
        case .file(let file)?:
            guard let data = FileManager.default.contents(atPath: file), data.count <= 65_536 else {
                throw TokenSettings.Error("tokens.jwks.file: cannot read \(file) (or larger than 64 KB)")
            }
            do {
                state.cache.load(try JSONWebKeySet.parse(Array(data), source: file), now: NIODeadline.now().uptimeNanoseconds)
            } catch {
                throw TokenSettings.Error("tokens.jwks.file: \(error)")
            }
            self.fetcher = nil
        case .url(let url)?:
            do {
                self.fetcher = try JWKSFetcher(url: url)
            } catch {
                throw TokenSettings.Error("tokens.jwks.url: \(error)")
            }
        case nil:
            self.fetcher = nil
        }
        self.settings = settings
        self.verifier = JWTVerifier(keys: keys, policy: settings.policy, maximumTokenBytes: settings.maxTokenBytes, cache: VerifiedTokenCache())
        self.cache = NIOLockedValueBox(state)
        self.logger = logger
    }

    /// Whether any key is configured (else the node runs in insecure dev mode).
    public var hasKeys: Bool { !self.verifier.keys.isEmpty || self.settings.jwks != nil }

    /// The JWKS keys known now.
    public var jwksKeys: [VerificationKey] { self.cache.withLockedValue { $0.cache.keys } }

    /// Seconds since 1970, the clock tokens are compared with.
    public static func wallClock() -> Double { Date().timeIntervalSince1970 }

    // MARK: Synchronous verification

    /// Verifies a connection token with the keys known now.
    public func verifyConnectionToken(_ token: String, now: Double = TokenAuthority.wallClock()) -> Result<ConnectionTokenClaims, TokenFailure> {
        Result { () throws(TokenFailure) in try self.verifier.verifyConnectionToken(token, now: now, extraKeys: self.jwksKeys) }
    }

    /// Verifies a subscription token of `user` for `channel` with the keys known now.
    public func verifySubscriptionToken(_ token: String, user: String, channel: String, now: Double = TokenAuthority.wallClock()) -> Result<SubscriptionTokenClaims, TokenFailure> {
        Result { () throws(TokenFailure) in
            try self.verifier.verifySubscriptionToken(token, user: user, channel: channel, now: now, extraKeys: self.jwksKeys)
        }
    }

    // MARK: Verification that may learn a new kid

    /// Verifies a connection token; a `kid` unknown to every key may wait for one JWKS fetch.
    public func verifyConnectionToken(_ token: String, on eventLoop: any EventLoop) -> EventLoopFuture<ConnectionTokenClaims> {
        self.verify(on: eventLoop) { verifier, keys throws(TokenFailure) in
            try verifier.verifyConnectionToken(token, now: Self.wallClock(), extraKeys: keys)
        } needsFetch: {
            self.namesUnknownKid(token)
        }
    }

    /// Verifies a subscription token; a `kid` unknown to every key may wait for one JWKS fetch.
    public func verifySubscriptionToken(_ token: String, user: String, channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<SubscriptionTokenClaims> {
        self.verify(on: eventLoop) { verifier, keys throws(TokenFailure) in
            try verifier.verifySubscriptionToken(token, user: user, channel: channel, now: Self.wallClock(), extraKeys: keys)
        } needsFetch: {
            self.namesUnknownKid(token)
        }
    }

    private func namesUnknownKid(_ token: String) -> Bool {
        guard self.fetcher != nil else { return false }
        return self.verifier.namesUnknownKey(token, extraKeys: self.jwksKeys)
    }

    private func verify<Claims: Sendable>(
        on eventLoop: any EventLoop,
        _ body: @escaping @Sendable (JWTVerifier, [VerificationKey]) throws(TokenFailure) -> Claims,
        needsFetch: @escaping @Sendable () -> Bool
    ) -> EventLoopFuture<Claims> {
        do {
            return eventLoop.makeSucceededFuture(try body(self.verifier, self.jwksKeys))
        } catch {
            guard needsFetch(), let fetch = self.fetchForUnknownKid(on: eventLoop) else { return eventLoop.makeFailedFuture(error) }
            return fetch.flatMapThrowing { () throws(TokenFailure) -> Claims in try body(self.verifier, self.jwksKeys) }
        }
    }

    /// The fetch a token with an unknown kid waits for: the one under way, or a new one when the
    /// last began 30 s ago or more; nil when none may start.
    private func fetchForUnknownKid(on eventLoop: any EventLoop) -> EventLoopFuture<Void>? {
        guard let fetcher else { return nil }
        let now = NIODeadline.now().uptimeNanoseconds
        let (existing, started) = self.cache.withLockedValue { state -> (EventLoopFuture<Void>?, EventLoopPromise<Void>?) in
            if let inFlight = state.inFlight { return (inFlight, nil) }
            if case .stopped = state.lifecycle { return (nil, nil) }
            guard state.cache.beginFetchForUnknownKid(now: now) else { return (nil, nil) }
            return (nil, Self.markFetch(&state, on: eventLoop))
        }
        if let existing { return existing.hop(to: eventLoop) }
        guard let started else { return nil }
        self.runFetch(fetcher, on: eventLoop, completing: started)
        return started.futureResult
    }

    /// Records a fetch as under way, in the same locked section that decided to start it: `stop()`
    /// then always sees it, however the threads interleave.
    private static func markFetch(_ state: inout JWKSState, on eventLoop: any EventLoop) -> EventLoopPromise<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        state.inFlight = promise.futureResult
        return promise
    }

    /// Runs a fetch marked by `markFetch`; `promise` completes once the set is taken or the failure
    /// recorded.
    private func runFetch(_ fetcher: JWKSFetcher, on eventLoop: any EventLoop, completing promise: EventLoopPromise<Void>) {
        fetcher.fetch(on: eventLoop).whenComplete { result in
            let now = NIODeadline.now().uptimeNanoseconds
            do {
                let keys = try JSONWebKeySet.parse(try result.get(), source: fetcher.url)
                self.cache.withLockedValue {
                    $0.cache.fetchSucceeded(keys, now: now)
                    $0.inFlight = nil
                }
                self.logger.info("JWKS fetched", metadata: ["url": "\(fetcher.url)", "keys": "\(keys.count)"])
            } catch {
                self.cache.withLockedValue {
                    $0.cache.fetchFailed(now: now)
                    $0.inFlight = nil
                }
                self.logger.warning("JWKS fetch failed, keeping the last good set", metadata: ["url": "\(fetcher.url)", "error": "\(error)"])
            }
            promise.succeed()
        }
    }

    // MARK: Lifecycle

    /// Starts the JWKS refresh (every 5 minutes, the first fetch now) when a URL is configured;
    /// the returned future completes when the first fetch has ended, well or not.
    @discardableResult
    public func start(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard let fetcher else { return eventLoop.makeSucceededVoidFuture() }
        let now = NIODeadline.now().uptimeNanoseconds
        let fetchesNow = self.cache.withLockedValue { state -> EventLoopPromise<Void>?? in
            guard case .idle = state.lifecycle else { return nil }
            guard state.cache.beginScheduledRefresh(now: now) else { return .some(nil) }
            return .some(Self.markFetch(&state, on: eventLoop))
        }
        guard let fetchesNow else { return eventLoop.makeSucceededVoidFuture() }
        let first: EventLoopFuture<Void>
        if let fetch = fetchesNow {
            self.runFetch(fetcher, on: eventLoop, completing: fetch)
            first = fetch.futureResult
        } else {
            first = eventLoop.makeSucceededVoidFuture()
        }
        let task = eventLoop.scheduleRepeatedTask(initialDelay: .seconds(15), delay: .seconds(15)) { _ in
            let now = NIODeadline.now().uptimeNanoseconds
            let due = self.cache.withLockedValue { state -> EventLoopPromise<Void>? in
                guard case .refreshing = state.lifecycle, state.cache.beginScheduledRefresh(now: now) else { return nil }
                return Self.markFetch(&state, on: eventLoop)
            }
            if let due { self.runFetch(fetcher, on: eventLoop, completing: due) }
        }
        let started = self.cache.withLockedValue { state -> Bool in
            guard case .idle = state.lifecycle else { return false }
            state.lifecycle = .refreshing(task)
            return true
        }
        if !started { task.cancel() }
        return first
    }

    /// Stops the JWKS refresh; no fetch starts after this. Returns the fetch under way, if any: its
    /// answer (and the verifications waiting for it) still need their event loops, so the caller
    /// keeps them running until it completes (at most the fetch's 2 s deadline).
    @discardableResult
    public func stop() -> EventLoopFuture<Void>? {
        let (task, inFlight) = self.cache.withLockedValue { state -> (RepeatedTask?, EventLoopFuture<Void>?) in
            defer { state.lifecycle = .stopped }
            guard case .refreshing(let task) = state.lifecycle else { return (nil, state.inFlight) }
            return (task, state.inFlight)
        }
        task?.cancel()
        return inFlight
    }
}
