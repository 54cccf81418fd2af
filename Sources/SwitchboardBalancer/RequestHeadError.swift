/// Why a request head was refused (answered 400, or 431 for size, and closed).
public enum RequestHeadError: Error, Hashable, Sendable, CustomStringConvertible {
    case tooLarge
    case tooManyLines
    case bareLineFeed
    case bareCarriageReturn
    case nulByte
    case emptyRequestLine
    case badRequestLine
    case unsupportedVersion
    case badHeaderName
    case missingColon
    case badHeaderValue
    case obsoleteLineFolding

    public var description: String {
        switch self {
        case .tooLarge: "request head larger than \(RequestHeadParser.maximumBytes) bytes"
        case .tooManyLines: "request head longer than \(RequestHeadParser.maximumLines) lines"
        case .bareLineFeed: "line ended by LF without CR"
        case .bareCarriageReturn: "CR not followed by LF"
        case .nulByte: "NUL byte in the request head"
        case .emptyRequestLine: "empty request line"
        case .badRequestLine: "malformed request line"
        case .unsupportedVersion: "not HTTP/1.0 or HTTP/1.1"
        case .badHeaderName: "malformed header name"
        case .missingColon: "header line without a colon"
        case .badHeaderValue: "control character in a header value"
        case .obsoleteLineFolding: "obsolete header line folding"
        }
    }
}
