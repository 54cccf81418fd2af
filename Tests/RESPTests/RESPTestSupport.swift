import NIOCore
import RESP
import Testing

/// Decodes every token in `wire`, which must end at a token boundary.
func decodeTokens(_ wire: ByteBuffer, limits: RESPLimits = RESPLimits()) throws -> [RESPToken] {
    var buffer = wire
    var decoder = RESPTokenDecoder(limits: limits)
    var tokens: [RESPToken] = []
    while let token = try decoder.decode(buffer: &buffer) {
        tokens.append(token)
    }
    #expect(buffer.readableBytes == 0, "bytes left after the last token")
    return tokens
}

func decodeTokens(_ wire: String, limits: RESPLimits = RESPLimits()) throws -> [RESPToken] {
    try decodeTokens(ByteBuffer(string: wire), limits: limits)
}

/// Decodes `wire`, which must hold exactly one token.
func decodeToken(_ wire: String, limits: RESPLimits = RESPLimits()) throws -> RESPToken {
    let tokens = try decodeTokens(wire, limits: limits)
    try #require(tokens.count == 1)
    return tokens[0]
}

/// The error decoding `wire` throws, nil when it throws none.
func decodingError(_ wire: ByteBuffer, limits: RESPLimits = RESPLimits()) -> RESPDecodingError? {
    var buffer = wire
    var decoder = RESPTokenDecoder(limits: limits)
    do {
        while try decoder.decode(buffer: &buffer) != nil {}
        return nil
    } catch let error as RESPDecodingError {
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

func decodingError(_ wire: String, limits: RESPLimits = RESPLimits()) -> RESPDecodingError? {
    decodingError(ByteBuffer(string: wire), limits: limits)
}

/// A token made of `wire` as is, for comparing with what the decoder emits.
func token(_ wire: String) -> RESPToken {
    RESPToken(validated: ByteBuffer(string: wire))
}
