import SwitchboardCore

/// JSON parser and command classification on arbitrary bytes: must never crash,
/// and whatever parses must survive a write/parse round trip unchanged.
/// And the session's publish fast path (`ClientMessage.parsePublish`) must, whenever it answers,
/// answer exactly what the general path (the parser with `publish.data` raw, then
/// `ClientMessage.parse`) makes of the same frame.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    guard UTF8Validation.isValid(bytes) else { return 0 }
    let input = bytes.bindMemory(to: UInt8.self)
    checkPublishFastPath(input)
    let parser = JSONParser(maximumDepth: 64, maximumValues: 50_000)
    guard let values = try? parser.parseSequence(input) else { return 0 }
    for value in values {
        let written = value.jsonString
        guard let again = try? parser.parse(Array(written.utf8)), again == value else {
            fatalError("round trip changed \(written)")
        }
        _ = try? ClientMessage.parse(value)
    }
    return 0
}

/// Small limits too, so that inputs of a few hundred bytes reach the value and depth limits.
let commandParsers = [ClientMessage.parser(maximumDepth: 64, maximumValues: 50_000), ClientMessage.parser(maximumDepth: 5, maximumValues: 12)]

func checkPublishFastPath(_ input: UnsafeBufferPointer<UInt8>) {
    for parser in commandParsers {
        guard let fast = ClientMessage.parsePublish(input, parser: parser) else { continue }
        let general: ClientMessage?
        if let values = try? parser.parseSequence(input), values.count == 1 {
            general = try? ClientMessage.parse(values[0])
        } else {
            general = nil
        }
        guard fast == general else {
            fatalError("publish fast path \(fast) where the general path gives \(String(describing: general)) for \(String(decoding: input, as: UTF8.self))")
        }
    }
}
