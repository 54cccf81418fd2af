import NIOCore
import RESP

/// The RESP decoder on arbitrary bytes: never crashes; every token it emits can be read at every level.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var buffer = ByteBuffer(bytes: UnsafeRawBufferPointer(start: start, count: count))
    var decoder = RESPTokenDecoder(limits: RESPLimits(maximumDepth: 16, maximumBulkLength: 1 << 20, maximumAggregateCount: 4096))
    while true {
        guard let token = try? decoder.decode(buffer: &buffer) else { break }
        walk(token, depth: 0)
    }
    return 0
}

func walk(_ token: RESPToken, depth: Int) {
    precondition(depth <= 17, "depth limit not enforced")
    switch token.value {
    case .array(let array), .set(let array), .push(let array):
        for element in array { walk(element, depth: depth + 1) }
    case .map(let map), .attribute(let map):
        for entry in map {
            walk(entry.key, depth: depth + 1)
            walk(entry.value, depth: depth + 1)
        }
    default:
        _ = token.string
        _ = token.int64
    }
}
