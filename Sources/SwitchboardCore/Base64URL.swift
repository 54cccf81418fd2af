import Foundation

/// Base64url without padding (RFC 4648 section 5), as in JWTs and SSE event ids.
public enum Base64URL {
    /// Encodes bytes.
    public static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Decodes text, padded or not; nil when it is not base64url.
    public static func decode(_ text: Substring) -> [UInt8]? {
        guard text.utf8.count <= 1 << 20 else { return nil }
        var s = String(text)
        guard !s.utf8.contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "/") }) else { return nil }
        s = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.utf8.count % 4 != 0 { s.append("=") }
        guard let data = Data(base64Encoded: s) else { return nil }
        return Array(data)
    }
}
