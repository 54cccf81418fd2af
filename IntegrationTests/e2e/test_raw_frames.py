"""Hand-made frames on a plain socket: RFC 6455 violations and stalled requests."""

from __future__ import annotations

import asyncio
import json
import socket

from sbclient import OP_PING, OP_PONG, OP_TEXT, RawWS, SteadyTraffic, connect, run, ws_frame


def _raw(node, **kw):
    return RawWS(node.host, node.port, "/ws", **kw)


def _violation(node, frame: bytes) -> tuple[str, int | None]:
    """Open a session by hand, send `frame`, return how the server ended it."""
    r = _raw(node)
    try:
        r.handshake()
        r.send(frame)
        how, code, _ = r.read_until_close(timeout=5)
        return how, code
    finally:
        r.close()


def _check_violation(node, frame: bytes, expected: int) -> None:
    async def main():
        async with SteadyTraffic(node) as steady:
            how, code = await asyncio.to_thread(_violation, node, frame)
            assert (how, code) == ("close", expected), f"expected close {expected}, got {how} {code}"
            await steady.check()

    run(main())


def test_raw_handshake_works(node):
    """Control: the raw client itself is right (so the failures below mean something)."""
    r = _raw(node)
    try:
        info = r.handshake()
        assert info["client"]
        assert r.call("ping", {}) == {"id": 2, "result": {}}
        r.send_frame(OP_PING, b"abc")
        fin, op, payload = r.recv_frame()
        assert (op, payload) == (OP_PONG, b"abc"), "WebSocket ping -> pong with the same payload"
        # A fragmented text message is one command.
        msg = json.dumps({"id": 3, "ping": {}}).encode()
        r.send(ws_frame(OP_TEXT, msg[:5], fin=False) + ws_frame(0x0, msg[5:], fin=True))
        assert r.recv_json() == [{"id": 3, "result": {}}]
    finally:
        r.close()


def test_unmasked_client_frame_closes_1002(node):
    _check_violation(node, ws_frame(OP_TEXT, b'{"id":2,"ping":{}}', mask=False), 1002)


def test_reserved_opcode_closes_1002(node):
    _check_violation(node, ws_frame(0x3, b"x"), 1002)


def test_reserved_bits_close_1002(node):
    _check_violation(node, ws_frame(OP_TEXT, b'{"id":2,"ping":{}}', rsv=0b100), 1002)


def test_continuation_without_start_closes_1002(node):
    _check_violation(node, ws_frame(0x0, b'{"id":2,"ping":{}}', fin=True), 1002)


def test_invalid_utf8_text_closes_1007(node):
    _check_violation(node, ws_frame(OP_TEXT, b'{"id":2,"publish":{"channel":"a","data":"\xff\xfe"}}'), 1007)


def test_half_request_line_does_not_hold_the_server(node):
    """Clients that send half an HTTP request line and go silent must not
    stop the node from serving anyone else."""

    async def main():
        stalled = []
        try:
            for _ in range(8):
                s = socket.create_connection((node.host, node.port), timeout=5)
                s.sendall(b"GET /ws HT")
                stalled.append(s)
            s = socket.create_connection((node.host, node.port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            stalled.append(s)

            async with SteadyTraffic(node) as steady:
                r = await asyncio.to_thread(node.http, "GET", "/healthz")
                assert r.status_code == 200
                a = await connect(node)
                b = await connect(node)
                await b.subscribe("alive")
                await a.publish("alive", 1)
                assert (await b.wait_pub("alive", timeout=3))["data"] == 1
                await steady.check()
        finally:
            for s in stalled:
                s.close()

    run(main())
