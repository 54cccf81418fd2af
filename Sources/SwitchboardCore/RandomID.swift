/// Random identifiers and secrets from the system's secure generator: node
/// names, SSE session secrets, generated API keys.
public enum RandomID {
    /// `bytes` random bytes as lowercase hex (two characters each).
    public static func hex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes * 2)
        for _ in 0..<max(0, bytes) {
            let byte = UInt8.random(in: 0...255, using: &generator)
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// `length` random characters of `a-z0-9`, after `prefix`.
    public static func alphanumeric(_ length: Int, prefix: String = "") -> String {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)
        let characters = (0..<max(0, length)).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] }
        return prefix + String(decoding: characters, as: UTF8.self)
    }
}
