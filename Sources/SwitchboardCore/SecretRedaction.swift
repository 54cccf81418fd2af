import Crypto
import Foundation

/// Hides secrets in text meant for logs, errors and `/api/info`.
public enum SecretRedaction {
    /// `redis://user:pw@host:6379/0` -> `redis://user:<redacted>@host:6379/0`; other text unchanged.
    public static func url(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://") else { return text }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return text }
        let userinfo = rest[..<at]
        let user = userinfo.firstIndex(of: ":").map { userinfo[..<$0] } ?? userinfo
        let hidden = userinfo.contains(":") ? "\(user):<redacted>" : "<redacted>"
        return String(text[..<schemeEnd.upperBound]) + hidden + String(rest[at...])
    }

    /// A short, non-reversible tag for a token in logs: the first 8 hex digits of its SHA-256.
    public static func tokenTag(_ token: String) -> String {
        SHA256.hash(data: Array(token.utf8)).prefix(4).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
