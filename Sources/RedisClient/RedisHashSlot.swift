/// The Redis Cluster slot of a key (0...16383): CRC16 (XMODEM) of the key's hash tag, or of the
/// whole key when it has none, modulo 16384.
///
/// The hash tag is what lies between the first `{` and the first `}` after it, when that is not
/// empty; so `sb:{chat}:s` and `sb:{chat}:m` share a slot, and one script may touch both.
public enum RedisHashSlot {
    /// Slots in a Redis Cluster.
    public static let count = 16_384

    /// The slot of `key`'s UTF-8 bytes.
    public static func slot(of key: String) -> UInt16 {
        var key = key
        return key.withUTF8 { self.slot(ofBytes: $0) }
    }

    /// The slot of a key given as bytes.
    public static func slot(ofBytes key: some Collection<UInt8>) -> UInt16 {
        if let open = key.firstIndex(of: UInt8(ascii: "{")) {
            let tagStart = key.index(after: open)
            if let close = key[tagStart...].firstIndex(of: UInt8(ascii: "}")), close != tagStart {
                return self.crc16(key[tagStart..<close]) & UInt16(self.count - 1)
            }
        }
        return self.crc16(key) & UInt16(self.count - 1)
    }

    /// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), as Redis Cluster defines it.
    static func crc16(_ bytes: some Collection<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ self.table[Int((crc >> 8) ^ UInt16(byte)) & 0xFF]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index -> UInt16 in
        var crc = UInt16(index) << 8
        for _ in 0..<8 {
            crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }
}
