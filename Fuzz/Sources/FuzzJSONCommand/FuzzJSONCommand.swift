import SwitchboardCore

/// JSON parser and command classification on arbitrary bytes: must never crash,
/// and whatever parses must survive a write/parse round trip unchanged.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    guard UTF8Validation.isValid(bytes) else { return 0 }
    let parser = JSONParser(maximumDepth: 64, maximumValues: 50_000)
    guard let values = try? parser.parseSequence(bytes.bindMemory(to: UInt8.self)) else { return 0 }
    for value in values {
        let written = value.jsonString
        guard let again = try? parser.parse(Array(written.utf8)), again == value else {
            fatalError("round trip changed \(written)")
        }
        _ = try? ClientMessage.parse(value)
    }
    return 0
}
