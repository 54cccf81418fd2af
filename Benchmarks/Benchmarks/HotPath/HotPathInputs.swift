import Foundation
import NIOCore
import SwitchboardCore
@_spi(Harness) import SwitchboardServer

/// The inputs of the hot-path benchmarks, and the command decoding a session does.
enum HotPathInputs {
    /// A publication as a node receives it from the broker: `payloadSize` bytes of JSON
    /// (a string), the publisher's client info, and a publish time (wall-clock nanoseconds since
    /// 1970, as the node stamps publications).
    static func samplePublication(payloadSize: Int, offset: UInt64 = 1) -> Publication {
        var data = ByteBuffer()
        data.writeJSONString(String(repeating: "x", count: max(0, payloadSize - 2)))
        return Publication(
            offset: offset,
            data: data,
            info: ClientInfo(client: "n1-0-1", user: ""),
            time: UInt64(max(0, Date().timeIntervalSince1970 * 1e9))
        )
    }

    /// The text of a client `publish` command with a `payloadSize`-byte JSON string as data.
    static func publishCommand(id: UInt32 = 7, channel: String, payloadSize: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeStaticString("{\"id\":")
        buffer.writeDecimal(id)
        buffer.writeStaticString(",\"publish\":{\"channel\":")
        buffer.writeJSONString(channel)
        buffer.writeStaticString(",\"data\":")
        buffer.writeJSONString(String(repeating: "x", count: max(0, payloadSize - 2)))
        buffer.writeStaticString("}}")
        return buffer
    }

    /// A masked client text frame carrying `payload` (the mask key is zero, so the bytes stay readable).
    static func maskedTextFrame(_ payload: ByteBuffer) -> ByteBuffer {
        var payload = payload
        var frame = ByteBuffer()
        frame.writeInteger(UInt8(0x81))
        let length = payload.readableBytes
        if length < 126 {
            frame.writeInteger(UInt8(0x80) | UInt8(length))
        } else if length <= Int(UInt16.max) {
            frame.writeInteger(UInt8(0x80 | 126))
            frame.writeInteger(UInt16(length))
        } else {
            frame.writeInteger(UInt8(0x80 | 127))
            frame.writeInteger(UInt64(length))
        }
        frame.writeInteger(UInt32(0))
        frame.writeBuffer(&payload)
        return frame
    }

    /// Decodes a client message payload (one or more commands, newline separated) with the
    /// session's parser and limits, as `ClientSession.channelRead` does; returns the last command.
    @discardableResult
    static func decodeCommand(_ payload: ByteBuffer) throws -> ClientMessage? {
        let values = try payload.withUnsafeReadableBytes { bytes throws(JSONParser.Error) in
            try NodeHarness.clientMessageParser.parseSequence(
                UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count: bytes.count))
        }
        var last: ClientMessage?
        for value in values {
            last = try ClientMessage.parse(value)
        }
        return last
    }
}
