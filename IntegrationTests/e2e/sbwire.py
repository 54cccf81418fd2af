"""Wire formats the e2e tests speak by hand, with no sockets: WebSocket
frames (RFC 6455), HTTP chunked transfer encoding, the SSE event stream,
and bounded waits. `sbclient` builds its raw clients on these and re-exports
them (`from sbclient import ws_frame, OP_TEXT` keeps working); they are
tested on their own in test_sbwire.py."""

from __future__ import annotations

import codecs
import json
import os
import re
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# --------------------------------------------------------------------------
# Bounded waits
# --------------------------------------------------------------------------


def wait_until(pred: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.02) -> Any:
    """Poll `pred` until it returns something truthy (returned), at most
    `timeout` seconds; then fail with `what`. The wait is for a condition,
    never a fixed time: it returns as soon as the condition holds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# WebSocket frames
# --------------------------------------------------------------------------


def ws_frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: bool = True, rsv: int = 0,
             key: bytes | None = None) -> bytes:
    """One frame; masked (as a client must) with a random key unless `key` is given."""
    b0 = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = bytes([b0, mbit | n])
    elif n < 65536:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = key if key is not None else os.urandom(4)
        assert len(key) == 4
        payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
        hdr += key
    return hdr + payload


def parse_frame(buf: bytes) -> tuple[tuple[bool, int, bytes], int] | None:
    """The first complete frame of `buf`: ((fin, opcode, unmasked payload),
    bytes used), or None when `buf` does not hold a whole frame yet."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    n = b1 & 0x7F
    i = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n = struct.unpack("!H", buf[2:4])[0]
        i = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n = struct.unpack("!Q", buf[2:10])[0]
        i = 10
    key = None
    if b1 & 0x80:
        if len(buf) < i + 4:
            return None
        key = buf[i:i + 4]
        i += 4
    if len(buf) < i + n:
        return None
    payload = buf[i:i + n]
    if key:
        payload = bytes(b ^ key[j & 3] for j, b in enumerate(payload))
    return (bool(b0 & 0x80), b0 & 0x0F, payload), i + n


def close_code(payload: bytes) -> int | None:
    """The status code of a close frame's payload (None when it has none)."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def text_objects(payload: bytes) -> list[Any]:
    """The JSON objects of a text frame (one per line), without pings (`{}`)."""
    objs = [json.loads(p) for p in payload.decode().split("\n") if p.strip()]
    return [o for o in objs if o != {}]


# --------------------------------------------------------------------------
# HTTP chunked transfer encoding
# --------------------------------------------------------------------------


class ChunkDecoder:
    """Undoes `Transfer-Encoding: chunked` incrementally: `feed(bytes)`
    passes the body's bytes to `sink`; `terminated` once the last chunk (0)
    came; framing trouble lands in `errors`."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink = sink
        self.buf = b""
        self.left = 0
        self.need_crlf = False
        self.terminated = False
        self.errors: list[str] = []

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self.buf and not self.terminated:
            if self.left > 0:
                take = self.buf[:self.left]
                self.buf = self.buf[len(take):]
                self.left -= len(take)
                self.sink(take)
                if self.left == 0:
                    self.need_crlf = True
                continue
            if self.need_crlf:
                if len(self.buf) < 2:
                    return
                if self.buf[:2] != b"\r\n":
                    self.errors.append(f"chunk not followed by CRLF: {self.buf[:20]!r}")
                self.buf = self.buf[2:]
                self.need_crlf = False
                continue
            i = self.buf.find(b"\r\n")
            if i < 0:
                if len(self.buf) > 1024:
                    self.errors.append(f"bad chunk size line: {self.buf[:40]!r}")
                    self.buf = b""
                return
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.errors.append(f"bad chunk size line: {line[:40]!r}")
                self.buf = b""
                return
            if size == 0:
                self.terminated = True
                return
            self.left = size


# --------------------------------------------------------------------------
# Server-sent events
# --------------------------------------------------------------------------


@dataclass
class SSEEvent:
    data: str | None          # the joined `data:` lines, None when the event had none
    id: str | None            # the `id:` field of this event (None when the event had no `id:` line)
    event: str | None         # the `event:` field
    obj: Any                  # json.loads(data), or None when it is not JSON
    json_ok: bool
    t: float


class SSEParser:
    """The event stream format (HTML's server-sent events): `feed(bytes)`
    with any split, UTF-8 across splits, CR, LF or CRLF line ends; a blank
    line ends an event; `:` lines are comments (counted). Each complete event
    goes to `on_event`."""

    def __init__(self, on_event: Callable[[SSEEvent], None]) -> None:
        self.on_event = on_event
        self.comments = 0
        self.raw_bytes = 0
        self._text = ""
        self._cur: dict[str, Any] = {}
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> None:
        self.raw_bytes += len(data)
        self._text += self._dec.decode(data)
        while True:
            m = re.search(r"\r\n|\r|\n", self._text)
            if m is None:
                return
            if m.group() == "\r" and m.end() == len(self._text):
                return  # maybe the first half of \r\n
            line, self._text = self._text[:m.start()], self._text[m.end():]
            self._line(line)

    def _line(self, line: str) -> None:
        if line == "":
            if self._cur:
                data = self._cur.get("data")
                obj, ok = None, False
                if data is not None:
                    try:
                        obj, ok = json.loads(data), True
                    except ValueError:
                        pass
                ev = SSEEvent(data=data, id=self._cur.get("id"), event=self._cur.get("event"), obj=obj,
                              json_ok=ok, t=time.monotonic())
                self._cur = {}
                self.on_event(ev)
            return
        if line.startswith(":"):
            self.comments += 1
            return
        field_name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field_name == "data":
            self._cur["data"] = value if "data" not in self._cur else self._cur["data"] + "\n" + value
        elif field_name in ("id", "event", "retry"):
            self._cur[field_name] = value
        else:
            self._cur.setdefault("unknown", []).append(line)
