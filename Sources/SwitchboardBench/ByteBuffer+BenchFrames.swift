import NIOCore

/// The frames and bodies the bench sends, written straight into buffers.
extension ByteBuffer {
    /// Writes a non-negative or negative integer in decimal, without a String.
    mutating func writeDecimal(_ value: Int64) {
        if value < 0 {
            self.writeInteger(UInt8(ascii: "-"))
            self.writeDecimal(UInt64(value.magnitude))
        } else {
            self.writeDecimal(UInt64(value))
        }
    }

    mutating func writeDecimal(_ value: UInt64) {
        var digits = 1
        var power: UInt64 = 10
        while digits < 20, value >= power {
            digits += 1
            power = power &* 10
        }
        let start = self.writerIndex
        self.writeRepeatingByte(UInt8(ascii: "0"), count: digits)
        var rest = value
        for i in stride(from: digits - 1, through: 0, by: -1) {
            self.setInteger(UInt8(ascii: "0") + UInt8(rest % 10), at: start + i)
            rest /= 10
        }
    }

    /// The benchmark payload `{"seq":S,"ts":T[,"src":P],"pad":"xx.."}`,
    /// padded with x to `size` bytes when size allows. `T` is the send time
    /// in Unix nanoseconds; seq 0 marks a warm-up publication. `src` names
    /// the publisher when there are several, so order is checked per publisher.
    mutating func writeBenchPayload(seq: Int64, timestamp: Int64, source: Int?, size: Int) {
        let start = self.writerIndex
        self.writeStaticString(#"{"seq":"#)
        self.writeDecimal(seq)
        self.writeStaticString(#","ts":"#)
        self.writeDecimal(timestamp)
        if let source {
            self.writeStaticString(#","src":"#)
            self.writeDecimal(Int64(source))
        }
        let pad = size - (self.writerIndex - start) - #","pad":""}"#.utf8.count
        if pad > 0 {
            self.writeStaticString(#","pad":""#)
            self.writeRepeatingByte(UInt8(ascii: "x"), count: pad)
            self.writeInteger(UInt8(ascii: "\""))
        }
        self.writeInteger(UInt8(ascii: "}"))
    }

    /// `{"id":1,"connect":{"name":"switchboard-bench"[,"token":T]}}`
    mutating func writeConnectCommand(token: String?) {
        self.writeStaticString(#"{"id":1,"connect":{"name":"switchboard-bench""#)
        if let token, !token.isEmpty {
            self.writeStaticString(#","token":""#)
            self.writeString(token.filter { $0 != "\"" && $0 != "\\" })
            self.writeInteger(UInt8(ascii: "\""))
        }
        self.writeStaticString("}}")
    }

    /// `{"id":N,"subscribe":{"channel":"C"}}` (channel names are validated to need no escaping).
    mutating func writeSubscribeCommand(id: Int64, channel: String) {
        self.writeStaticString(#"{"id":"#)
        self.writeDecimal(id)
        self.writeStaticString(#","subscribe":{"channel":""#)
        self.writeString(channel)
        self.writeStaticString(#""}}"#)
    }

    /// `{"id":N,"publish":{"channel":"C","data":PAYLOAD}}`
    mutating func writePublishCommand(id: Int64, channel: String, seq: Int64, source: Int?, size: Int) {
        self.writeStaticString(#"{"id":"#)
        self.writeDecimal(id)
        self.writeStaticString(#","publish":{"channel":""#)
        self.writeString(channel)
        self.writeStaticString(#"","data":"#)
        self.writeBenchPayload(seq: seq, timestamp: WallClock.nanoseconds(), source: source, size: size)
        self.writeStaticString("}}")
    }

    /// The HTTP API body `{"channel":"C","data":PAYLOAD}`.
    mutating func writeAPIPublishBody(channel: String, seq: Int64, source: Int?, size: Int) {
        self.writeStaticString(#"{"channel":""#)
        self.writeString(channel)
        self.writeStaticString(#"","data":"#)
        self.writeBenchPayload(seq: seq, timestamp: WallClock.nanoseconds(), source: source, size: size)
        self.writeInteger(UInt8(ascii: "}"))
    }
}
