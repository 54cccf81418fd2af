import SwitchboardCore
import Testing

@Suite("UTF8Validation")
struct UTF8ValidationTests {
    @Test("accepts well-formed text", arguments: ["", "plain ascii long enough for the fast path", "é", "€", "😀", "κόσμε", "\u{10FFFF}"])
    func valid(_ text: String) {
        #expect(UTF8Validation.isValid(Array(text.utf8)))
    }

    @Test("refuses malformed sequences", arguments: [
        [0x80] as [UInt8], [0xC0, 0xAF], [0xC1, 0xBF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF0, 0x80, 0x80, 0xAF],
        [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xFF], [0xCE], [0xE2, 0x82], [0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0xCE],
    ])
    func invalid(_ bytes: [UInt8]) {
        #expect(!UTF8Validation.isValid(bytes))
    }

    @Test("agrees with the standard library on every two-byte prefix")
    func exhaustiveTwoBytes() {
        for a in 0...255 {
            for b in 0...255 {
                let bytes: [UInt8] = [UInt8(a), UInt8(b)]
                let reference = String(validating: bytes, as: UTF8.self) != nil
                #expect(UTF8Validation.isValid(bytes) == reference, "\(bytes)")
            }
        }
    }
}
