"""The test client's own wire code (sbwire), with no node: WebSocket
framing, chunked decoding and the SSE parser. The e2e tests judge the
server through these; a bug here would hide or invent a server bug."""

from __future__ import annotations

import json
import random
import struct
import time

import pytest

from sbwire import (OP_CLOSE, OP_PING, OP_TEXT, ChunkDecoder, SSEParser, close_code, parse_frame, text_objects,
                    wait_until, ws_frame)


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("mask", [True, False])
def test_frame_round_trip_at_every_length_boundary(n, mask):
    payload = bytes(random.Random(n).getrandbits(8) for _ in range(n))
    frame = ws_frame(OP_TEXT, payload, mask=mask)
    header = 2 + (0 if n < 126 else 2 if n < 65536 else 8) + (4 if mask else 0)
    assert len(frame) == header + n
    assert (frame[1] & 0x80 != 0) == mask
    got = parse_frame(frame + b"rest")
    assert got is not None
    (fin, op, body), used = got
    assert (fin, op, body, used) == (True, OP_TEXT, payload, header + n)


def test_frame_known_bytes():
    # RFC 6455 section 5.7: a masked "Hello".
    frame = ws_frame(OP_TEXT, b"Hello", key=bytes([0x37, 0xfa, 0x21, 0x3d]))
    assert frame == bytes([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58])
    assert parse_frame(bytes([0x81, 0x05]) + b"Hello") == ((True, OP_TEXT, b"Hello"), 7)
    # Not final, RSV bits, a control opcode.
    f = ws_frame(OP_PING, b"x", fin=False, rsv=0b101, mask=False)
    assert f[0] == 0x09 | 0x50 and parse_frame(f) == ((False, OP_PING, b"x"), 3)


def test_parse_frame_waits_for_a_whole_frame():
    frame = ws_frame(OP_TEXT, b"y" * 300)
    for cut in range(len(frame)):
        assert parse_frame(frame[:cut]) is None, f"a frame cut at {cut} bytes was taken as whole"
    assert parse_frame(frame) is not None


def test_close_code_and_text_objects():
    assert close_code(struct.pack("!H", 1009) + b"too big") == 1009
    assert close_code(b"") is None
    assert text_objects(b'{"id":1}\n{}\n\n{"a":[1]}') == [{"id": 1}, {"a": [1]}]


def test_chunk_decoder_any_split():
    body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in [b"data: a\n\n", b"x" * 300, b"z"]) + b"0\r\n\r\n"
    for step in (1, 2, 3, 7, 64, len(body)):
        out = bytearray()
        d = ChunkDecoder(out.extend)
        for i in range(0, len(body), step):
            d.feed(body[i:i + step])
        assert d.terminated and not d.errors, (step, d.errors)
        assert bytes(out) == b"data: a\n\n" + b"x" * 300 + b"z"


def test_chunk_decoder_reports_bad_framing():
    d = ChunkDecoder(lambda b: None)
    d.feed(b"zz\r\n")
    assert d.errors and "bad chunk size" in d.errors[0]
    d = ChunkDecoder(lambda b: None)
    d.feed(b"1\r\nxNO")
    assert d.errors and "CRLF" in d.errors[0]


def _parse(chunks: list[bytes]) -> tuple[list, SSEParser]:
    events: list = []
    p = SSEParser(events.append)
    for c in chunks:
        p.feed(c)
    return events, p


def test_sse_parser_fields_comments_and_line_ends():
    stream = (b": hello\r\n"
              b"id: abc\r\ndata: {\"a\": 1}\r\n\r\n"
              b"event: x\rdata: line1\rdata: line2\r\r"
              b"data:nospace\n\n"
              b"retry: 5\nfoo: bar\n\n"
              b"data: not json\n\n")
    for step in (1, 2, 5, len(stream)):
        events, p = _parse([stream[i:i + step] for i in range(0, len(stream), step)])
        assert p.comments == 1 and p.raw_bytes == len(stream)
        assert [(e.id, e.event, e.data, e.json_ok) for e in events] == [
            ("abc", None, '{"a": 1}', True),
            (None, "x", "line1\nline2", False),
            (None, None, "nospace", False),
            (None, None, None, False),
            (None, None, "not json", False),
        ], step
        assert events[0].obj == {"a": 1}


def test_sse_parser_utf8_split_inside_a_character_and_crlf_split():
    data = json.dumps({"t": "héllo 🙂"}, ensure_ascii=False).encode()
    stream = b"data: " + data + b"\r\n\r\n"
    events, _ = _parse([stream[i:i + 1] for i in range(len(stream))])
    assert len(events) == 1 and events[0].obj == {"t": "héllo 🙂"}


def test_sse_parser_holds_an_unfinished_event():
    events, p = _parse([b"data: 1\n"])
    assert events == []
    p.feed(b"\n")
    assert [e.data for e in events] == ["1"]


def test_wait_until_returns_at_once_and_fails_at_the_bound():
    t = time.monotonic()
    assert wait_until(lambda: 42, 5) == 42
    assert time.monotonic() - t < 1
    t = time.monotonic()
    with pytest.raises(AssertionError, match="never"):
        wait_until(lambda: False, 0.2, "never")
    assert 0.2 <= time.monotonic() - t < 2
