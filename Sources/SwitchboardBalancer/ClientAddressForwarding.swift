/// How the balancer tells a node who the client is. Nodes believe either only from `--trusted-proxy`
/// addresses.
public enum ClientAddressForwarding: String, Sendable, Hashable, CaseIterable {
    /// Incoming `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` are removed and the balancer's own
    /// `X-Forwarded-For` and `X-Forwarded-Proto` added to the request head (the default).
    case forwardedHeaders = "x-forwarded-for"
    /// A PROXY protocol v2 header (with the SSL TLV when TLS was terminated) goes before the request
    /// head, which is then forwarded unchanged apart from the stripped `X-Forwarded-*` headers.
    case proxyProtocol = "proxy-protocol"
}
