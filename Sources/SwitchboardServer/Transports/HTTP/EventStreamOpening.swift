import NIOCore
import SwitchboardCore

/// What a request to open an SSE stream asks for: the `connect` params and the positions of a
/// `Last-Event-ID`, read from `GET /sse?connect=<JSON>` or from the JSON body of `POST /sse`.
///
/// Pure code (no channel, no token verification), so every refusal is tested without sockets;
/// `HTTPHandler` only turns the outcome into a response or a stream (docs/transports.md).
///
/// A token is never taken from a URL: request targets end up in proxy and access logs, and
/// EventSource (the only reason to use GET) cannot send headers or a body. A GET whose `connect`
/// carries a `token` (its own, or a subscription token in `subs`) is refused before the token is
/// looked at, so it reaches no verifier, metric or log.
struct EventStreamOpening: Hashable {
    /// The connect params, with the `Last-Event-ID` positions merged in (they win over `subs`).
    var params: ConnectParams

    /// Why a stream is not opened: answered with `status` and `{"error": {"code": 107, "message"}}`.
    struct Refusal: Error, Hashable {
        var status: Int
        var message: String

        static let tokenInURL = Refusal(
            status: 400,
            message: "a token must not be sent in the URL: POST /sse with the connect params as a JSON body (docs/transports.md)")
        static func malformed(_ message: String) -> Refusal { Refusal(status: 400, message: message) }
    }

    /// What the body of `POST /sse` may hold.
    static let bodyMembers: Set<String> = ["token", "name", "version", "subs", "lastEventId"]

    private static let parser = JSONParser(maximumDepth: 16, maximumValues: 20_000)

    /// `GET /sse?connect=<JSON>`: `connect` is the query value (percent-decoded), nil or empty for
    /// an anonymous stream without subscriptions.
    static func query(connect: String?, lastEventID: String?) -> Result<EventStreamOpening, Refusal> {
        guard let connect, !connect.isEmpty else {
            return .success(EventStreamOpening(params: Self.merging(ConnectParams(), lastEventID: lastEventID)))
        }
        guard case .object(let object) = try? Self.parser.parse(connect.utf8) else {
            return .failure(.malformed("connect must be a JSON object"))
        }
        if let token = object["token"], token != .null {
            return .failure(.tokenInURL)
        }
        if let subs = object["subs"], (try? ConnectParams.parseSubTokens(subs))?.isEmpty == false {
            return .failure(.tokenInURL)  // a subscription token is a token too
        }
        return Self.params(object, lastEventID: lastEventID)
    }

    /// `POST /sse` without `session`: `body` is the connect params as a JSON object (an empty body
    /// is an anonymous stream). `lastEventID` is the header, which wins over a `lastEventId`
    /// member of the body; `bearer` is the `Authorization: Bearer` token, used when the body has none.
    static func body(_ body: ByteBuffer, lastEventID: String?, bearer: String?) -> Result<EventStreamOpening, Refusal> {
        guard body.readableBytesView.contains(where: { !Self.isWhitespace($0) }) else {
            var params = ConnectParams()
            params.token = bearer
            return .success(EventStreamOpening(params: Self.merging(params, lastEventID: lastEventID)))
        }
        guard body.withUnsafeReadableBytes({ UTF8Validation.isValid($0) }) else {
            return .failure(.malformed("the body is not UTF-8"))
        }
        guard case .object(let object) = try? Self.parser.parse(body.readableBytesView) else {
            return .failure(.malformed("the body must be a JSON object of connect params"))
        }
        // Commands posted without `?session=` would otherwise open an anonymous stream nobody asked for.
        if let member = object.members.first(where: { !Self.bodyMembers.contains($0.key) }) {
            return .failure(.malformed("unknown connect param \(member.key) (commands go to POST /sse?session=<session>)"))
        }
        var lastEventID = lastEventID.flatMap { $0.isEmpty ? nil : $0 }
        if lastEventID == nil {
            do throws(SwitchboardError) {
                lastEventID = try ClientMessage.optionalString(object, "lastEventId")
            } catch {
                return .failure(.malformed(error.message))
            }
        }
        switch Self.params(object, lastEventID: lastEventID) {
        case .success(var opening):
            if opening.params.token == nil { opening.params.token = bearer }
            return .success(opening)
        case .failure(let refusal):
            return .failure(refusal)
        }
    }

    private static func params(_ object: JSONObject, lastEventID: String?) -> Result<EventStreamOpening, Refusal> {
        do throws(SwitchboardError) {
            return .success(EventStreamOpening(params: Self.merging(try ConnectParams.parse(object), lastEventID: lastEventID)))
        } catch {
            return .failure(.malformed(error.message))
        }
    }

    /// Adds the positions of `lastEventID` to `params`. An id that is not one of ours (a proxy's, a
    /// stale format) is ignored rather than refused: EventSource gives up for good on an error
    /// status, and `connect` still names the channels.
    static func merging(_ params: ConnectParams, lastEventID: String?) -> ConnectParams {
        guard let lastEventID, !lastEventID.isEmpty, let resumedSubs = try? ResumeID.decode(Substring(lastEventID)) else {
            return params
        }
        var params = params
        // Indexed once: both lists come from the request (thousands of entries each at most), and a
        // search per resumed channel would make the merge quadratic in them.
        var index: [String: Int] = [:]
        index.reserveCapacity(params.subs.count)
        for (i, sub) in params.subs.enumerated() where index[sub.channel] == nil { index[sub.channel] = i }
        for resumed in resumedSubs {
            if let i = index[resumed.channel] {
                params.subs[i].since = resumed.since ?? params.subs[i].since
            } else {
                index[resumed.channel] = params.subs.count
                params.subs.append(resumed)
            }
        }
        return params
    }

    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\t")
    }
}
