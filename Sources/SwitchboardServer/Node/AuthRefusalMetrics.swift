import CoreMetrics

/// `switchboard_auth_refusals_total{reason}`: every way the node refuses or ends a client for
/// who it is or what it does, counted by kind, so an attack (a stream of bad tokens, a command
/// flood, pages from another site) shows on a dashboard before anyone reads a log.
///
/// Connection caps by address, by rate and by user are in `switchboard_refused_connections_total`.
final class AuthRefusalMetrics: Sendable {
    /// Why a client was refused.
    enum Reason: String, CaseIterable, Sendable {
        /// A connection token that did not verify (close 3500).
        case tokenInvalid = "token_invalid"
        /// An expired connection token at `connect` (109, close 3503).
        case tokenExpired = "token_expired"
        /// No token where one is required (101, close 3500).
        case tokenMissing = "token_missing"
        /// A `refresh` with an invalid token or one for another user (close 3500).
        case refreshInvalid = "refresh_invalid"
        /// A connection unrefreshed at expiry plus the grace (close 3503).
        case connectionExpired = "connection_expired"
        /// A subscription token that did not verify or had expired (103 / 109).
        case subscriptionTokenInvalid = "subscription_token_invalid"
        /// A subscription unrefreshed at expiry plus the grace (unsubscribe 2501).
        case subscriptionExpired = "subscription_expired"
        /// A channel permission refused (103, 108).
        case permission = "permission"
        /// A request from a page whose `Origin` is not allowed (403).
        case origin = "origin"
        /// A command over the connection's rate (111).
        case commandRate = "command_rate"
        /// A connection closed for too many rate refusals (3507).
        case commandRateClose = "command_rate_close"
        /// A history read (`history`, a recovery, a poll with positions) refused while its client
        /// address's budget of history bytes is spent (111, 429).
        case historyRate = "history_rate"
    }

    private let counters: [CoreMetrics.Counter]
    /// `switchboard_insecure`: 1 when the node runs without any token key (dev mode).
    let insecure: CoreMetrics.Gauge

    init(factory: DescribedMetricsFactory) {
        let help = factory.describing(
            "Clients refused or ended for identity or behaviour, by reason (token_invalid, token_expired, token_missing, refresh_invalid, "
                + "connection_expired, subscription_token_invalid, subscription_expired, permission, origin, command_rate, command_rate_close, history_rate).")
        self.counters = Reason.allCases.map {
            CoreMetrics.Counter(label: "switchboard_auth_refusals_total", dimensions: [("reason", $0.rawValue)], factory: help)
        }
        self.insecure = CoreMetrics.Gauge(
            label: "switchboard_insecure", factory: factory.describing("1 when no token key is configured (insecure dev mode: everything allowed), else 0."))
    }

    func count(_ reason: Reason) {
        // `counters` is in `allCases` order (twelve cases: the scan is cheaper than hashing).
        guard let index = Reason.allCases.firstIndex(of: reason) else { return }
        self.counters[index].increment()
    }
}
