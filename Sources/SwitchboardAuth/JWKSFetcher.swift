import Foundation
public import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Fetches a JWKS document from one fixed URL: a tiny HTTP/1.1 GET on NIO, over TLS for `https`.
///
/// The URL comes from configuration only, never from a token. Bounded everywhere: 2 s for the whole
/// exchange (connect included), 64 KB of body, status 200 only, no redirects.
public struct JWKSFetcher: Sendable {
    /// Why a URL is not acceptable or a fetch failed.
    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public let scheme: String
    public let host: String
    public let port: Int
    public let path: String
    /// Seconds for the whole fetch.
    public let timeout: TimeAmount
    /// Largest body accepted.
    public let maximumBytes: Int

    /// Parses `http(s)://host[:port][/path]`; any other scheme, userinfo or a fragment is refused.
    public init(url: String, timeout: TimeAmount = .seconds(2), maximumBytes: Int = 65_536) throws(Error) {
        guard let schemeEnd = url.range(of: "://") else { throw Error("JWKS URL \(url): not an absolute http(s) URL") }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else { throw Error("JWKS URL \(url): only http and https are allowed") }
        let rest = url[schemeEnd.upperBound...]
        guard !rest.contains("#"), !rest.contains(" ") else { throw Error("JWKS URL \(url): fragments and spaces are not allowed") }
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        guard !authority.contains("@") else { throw Error("JWKS URL: credentials in the URL are not allowed") }
        let path = rest.dropFirst(authority.count)
        var host = Substring(authority)
        var port = scheme == "https" ? 443 : 80
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else {
                throw Error("JWKS URL \(url): bad port")
            }
            port = p
            host = authority[..<colon]
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw Error("JWKS URL \(url): no host") }
        self.scheme = scheme
        self.host = String(host)
        self.port = port
        self.path = path.isEmpty ? "/" : (path.hasPrefix("?") ? "/" + path : String(path))
        self.timeout = timeout
        self.maximumBytes = maximumBytes
    }

    /// The URL, for logs and cache keys.
    public var url: String { "\(self.scheme)://\(self.host.contains(":") ? "[\(self.host)]" : self.host):\(self.port)\(self.path)" }

    /// Fetches the document's bytes.
    public func fetch(on eventLoop: any EventLoop) -> EventLoopFuture<[UInt8]> {
        let promise = eventLoop.makePromise(of: [UInt8].self)
        let tlsContext: NIOSSLContext?
        if self.scheme == "https" {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv12
            do {
                tlsContext = try NIOSSLContext(configuration: tls)
            } catch {
                return eventLoop.makeFailedFuture(Error("TLS setup failed: \(error)"))
            }
        } else {
            tlsContext = nil
        }
        let host = self.host
        let path = self.path
        let maximumBytes = self.maximumBytes
        let hostHeader = self.port == (self.scheme == "https" ? 443 : 80) ? host : "\(host):\(self.port)"
        let deadline = eventLoop.scheduleTask(in: self.timeout) {
            promise.fail(Error("JWKS fetch timed out"))
        }
        promise.futureResult.whenComplete { _ in deadline.cancel() }
        ClientBootstrap(group: eventLoop)
            .connectTimeout(self.timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tlsContext {
                        let serverName = host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
                        try sync.addHandler(NIOSSLClientHandler(context: tlsContext, serverHostname: serverName))
                    }
                    try sync.addHTTPClientHandlers()
                    try sync.addHandler(JWKSResponseHandler(promise: promise, host: hostHeader, path: path, maximumBytes: maximumBytes))
                }
            }
            .connect(host: host, port: self.port)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                case .failure(let error):
                    promise.fail(Error("JWKS fetch: cannot connect: \(error)"))
                }
            }
        return promise.futureResult
    }
}

/// Sends the GET and collects a bounded 200 response body.
final class JWKSResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let promise: EventLoopPromise<[UInt8]>
    private let host: String
    private let path: String
    private let maximumBytes: Int
    private var body: [UInt8] = []
    private var status: HTTPResponseStatus?

    init(promise: EventLoopPromise<[UInt8]>, host: String, path: String, maximumBytes: Int) {
        self.promise = promise
        self.host = host
        self.path = path
        self.maximumBytes = maximumBytes
    }

    func channelActive(context: ChannelHandlerContext) {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: self.path)
        head.headers.add(name: "Host", value: self.host)
        head.headers.add(name: "Accept", value: "application/json")
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "User-Agent", value: "switchboard-jwks")
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.status = head.status
            guard head.status == .ok else {
                self.promise.fail(JWKSFetcher.Error("JWKS fetch: HTTP \(head.status.code)"))
                context.close(promise: nil)
                return
            }
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > self.maximumBytes {
                self.promise.fail(JWKSFetcher.Error("JWKS fetch: body larger than \(self.maximumBytes) bytes"))
                context.close(promise: nil)
            }
        case .body(let buffer):
            guard self.status == .ok else { return }
            guard self.body.count + buffer.readableBytes <= self.maximumBytes else {
                self.promise.fail(JWKSFetcher.Error("JWKS fetch: body larger than \(self.maximumBytes) bytes"))
                context.close(promise: nil)
                return
            }
            self.body.append(contentsOf: buffer.readableBytesView)
        case .end:
            if self.status == .ok { self.promise.succeed(self.body) }
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.promise.fail(JWKSFetcher.Error("JWKS fetch: connection closed early"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Swift.Error) {
        self.promise.fail(JWKSFetcher.Error("JWKS fetch: \(error)"))
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension JWKSResponseHandler: Sendable {}
