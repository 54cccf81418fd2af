import NIOCore
import RESP
import Testing

/// Mutated examples: whatever the decoder accepts, `RESPToken` must be able to read.
@Suite("RESPTokenDecoder on mutated input")
struct RESPTokenMutationTests {
    /// A small deterministic generator (SplitMix64), so a failure can be reproduced.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64

        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Bytes that matter to the grammar, so mutations often stay close to valid RESP.
    static let interesting = Array("+-:$*_,#!=(%~>|\r\n0123456789-?tfinaxe.:".utf8)

    /// Reads every level of `token` and returns how many values it holds.
    @discardableResult
    func walk(_ token: RESPToken) -> Int {
        switch token.value {
        case .array(let elements), .set(let elements), .push(let elements):
            var values = 1
            var seen = 0
            for element in elements {
                #expect(element.base.readableBytes < token.base.readableBytes)
                values += self.walk(element)
                seen += 1
            }
            #expect(seen == elements.count)
            return values
        case .map(let entries), .attribute(let entries):
            var values = 1
            var seen = 0
            for (key, value) in entries {
                values += self.walk(key) + self.walk(value)
                seen += 1
            }
            #expect(seen == entries.count)
            return values
        default:
            _ = (token.string, token.int64, token.errorMessage, token.isNull)
            return 1
        }
    }

    @Test("5,000 mutations: tokens read back, decode alone to themselves, and cover the input")
    func mutations() throws {
        var random = SplitMix64(state: 0x5EED)
        let examples = RESPTokenDecoderTests.examples.map { Array($0.utf8) }
        var accepted = 0
        for _ in 0..<5_000 {
            var bytes = examples.randomElement(using: &random)!
            if Bool.random(using: &random) {
                bytes += examples.randomElement(using: &random)!
            }
            for _ in 0...Int.random(in: 0...3, using: &random) where !bytes.isEmpty {
                let index = Int.random(in: 0..<bytes.count, using: &random)
                let byte = Self.interesting.randomElement(using: &random)!
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes[index] = byte
                case 1: bytes.insert(byte, at: index)
                default: bytes.remove(at: index)
                }
            }

            let limits = RESPLimits(maximumDepth: 8, maximumBulkLength: 64, maximumAggregateCount: 16, maximumSimpleLength: 64)
            var buffer = ByteBuffer(bytes: bytes)
            var decoder = RESPTokenDecoder(limits: limits)
            var consumed: [UInt8] = []
            do {
                while let token = try decoder.decode(buffer: &buffer) {
                    accepted += 1
                    self.walk(token)
                    consumed += token.base.readableBytesView
                    #expect(try decodeTokens(token.base, limits: limits) == [token])
                }
            } catch {
                #expect(error is RESPDecodingError)
            }
            #expect(consumed == Array(bytes.prefix(consumed.count)))
        }
        #expect(accepted > 1_000)  // the mutations do not only produce garbage
    }
}
