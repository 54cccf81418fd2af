"""Attacks on a real node, on the memory broker and on Redis: every one gets a
clear answer, costs nothing that lasts, and the node keeps serving others.

Each test checks that the node is alive afterwards, and that its open file
descriptors (and, where the attack is about tables, its resident memory or
Redis keyspace) are back to their baseline. Healthy traffic runs beside the
attacks where it matters (`SteadyTraffic`)."""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import math
import os
import socket
import struct
import time
import urllib.parse
from typing import Any

import pytest

from sbclient import (OP_CLOSE, TOKEN_SECRET, RawWS, SteadyTraffic, free_port, make_jwt, resp_ping, run,
                      ws_frame)

MAX_OFFSET = 2**63 - 1
HUGE = 2**64 - 1

CLOSED_NAMESPACE_YAML = """\
# written by IntegrationTests/e2e/test_hostile.py
namespaces:
  priv:
    anonymous: false
"""


# --------------------------------------------------------------------------
# Helpers: raw HTTP on a socket, process figures, Redis
# --------------------------------------------------------------------------


def raw_http(port: int, data: bytes, timeout: float = 10.0, source: str = "127.0.0.1",
             trickle: float | None = None) -> tuple[bytes, float]:
    """Sends `data` (one byte per `trickle` seconds if given) and reads until the server closes.

    Returns what the server sent and how long until it closed (or until `timeout`)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    start = time.monotonic()
    out = b""
    try:
        if trickle is None:
            s.sendall(data)
        else:
            for b in data:
                s.sendall(bytes([b]))
                time.sleep(trickle)
                if time.monotonic() - start > timeout:
                    break
        while time.monotonic() - start < timeout:
            s.settimeout(max(0.05, timeout - (time.monotonic() - start)))
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, BrokenPipeError, socket.timeout, TimeoutError):
        pass
    finally:
        s.close()
    return out, time.monotonic() - start


def post(port: int, path: str, body: bytes, headers: str = "", timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """A POST with `Connection: close`; returns (status, headers, body)."""
    req = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n"
           .encode() + body)
    out, _ = raw_http(port, req, timeout=timeout)
    return parse_response(out)


def parse_response(out: bytes) -> tuple[int, dict, bytes]:
    assert b"\r\n\r\n" in out, f"no HTTP response: {out[:300]!r}"
    head, body = out.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    return status, headers, body


def rpc(port: int, commands: list[dict], headers: str = "") -> tuple[int, Any, int]:
    """POST /rpc; returns (status, parsed answer, answer size in bytes)."""
    body = "\n".join(json.dumps(c) for c in commands).encode()
    status, _, answer = post(port, "/rpc", body, headers=headers)
    return status, json.loads(answer), len(answer)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


def rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM)."""
    return _status_kib(pid, "VmHWM")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def settled_fd_count(pid: int, quiet: float = 0.3, timeout: float = 5.0) -> int:
    """The process's descriptor count once it held still for `quiet` seconds (the API connections of
    the set-up, closed by the client, are gone on the node's side too)."""
    deadline = time.monotonic() + timeout
    count = fd_count(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = fd_count(pid)
        if now == count:
            return count
        count = now
    return count


def fds_back_to(node, baseline: int, slack: int = 3, timeout: float = 10.0) -> None:
    wait_for(lambda: fd_count(node.pid) <= baseline + slack, timeout,
             f"file descriptors back to {baseline} (+{slack}); now {fd_count(node.pid)}")


def redis_command(port: int, *args: str) -> bytes:
    """One RESP command to a redis-server; the raw reply."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        cmd = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        s.sendall(cmd.encode())
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


def redis_dbsize(port: int) -> int:
    reply = redis_command(port, "DBSIZE")
    assert reply.startswith(b":"), reply
    return int(reply[1:].strip())


def assert_alive(node) -> None:
    assert node.alive(), f"node exited ({node.process.returncode}); log:\n{node.log_tail()}"
    r = node.http("GET", "/healthz", timeout=5)
    assert r.status_code == 200


@pytest.fixture(params=["memory", "redis"])
def target(request, node_factory, tmp_path):
    """One node on the memory broker, or on a real Redis (the same attacks against both)."""
    extra = ["--head-timeout", "2", "--request-timeout", "3", "--outbound-limit", "262144"]
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        node = node_factory.start("--broker", redis.url, *extra, token_secret=TOKEN_SECRET,
                                  config_text=CLOSED_NAMESPACE_YAML)
        node.redis = redis
    else:
        node = node_factory.start(*extra, token_secret=TOKEN_SECRET, config_text=CLOSED_NAMESPACE_YAML)
        node.redis = None
    node.broker = request.param
    # Open the broker's connections (the Redis client and subscriber connect on first use) before
    # any test takes its file-descriptor baseline: they stay open, and are not a leak.
    async def warm_up():
        async with SteadyTraffic(node, channel="warm:up", interval=0.02, max_publications=3) as steady:
            await steady.check()
    run(warm_up(), timeout=30)
    return node


# --------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------


def test_offsets_past_int64_are_refused_everywhere(target):
    base_fds = fd_count(target.pid)
    since = {"offset": HUGE, "epoch": "e"}
    # /poll: the one request that killed a Redis node.
    status, _, body = post(target.port, "/poll", json.dumps({"subs": {"x": since}, "timeout": 0}).encode())
    assert status == 400 and json.loads(body)["error"]["code"] == 107
    # /rpc history since
    status, answer, _ = rpc(target.port, [{"id": 1, "history": {"channel": "x", "since": since}}])
    assert status == 200 and answer[0]["error"]["code"] == 107, answer
    # WebSocket: subscribe since, history since, connect subs
    ws = RawWS("127.0.0.1", target.port)
    try:
        ws.handshake()
        for method, params in [("subscribe", {"channel": "x", "since": since}),
                               ("history", {"channel": "x", "since": since})]:
            reply = ws.call(method, params)
            assert reply["error"]["code"] == 107, reply
        # the largest allowed offset is fine (recovery simply fails)
        reply = ws.call("subscribe", {"channel": "y", "since": {"offset": MAX_OFFSET, "epoch": "e"}})
        assert reply["result"]["recovered"] is False, reply
    finally:
        ws.close()
    ws = RawWS("127.0.0.1", target.port)
    try:
        ws.send_json({"id": 1, "connect": {"subs": {"x": since}}})
        how, code, _ = ws.read_until_close(5)
        assert (how, code) == ("close", 3501)
    finally:
        ws.close()
    # SSE Last-Event-ID with the offset: ignored (EventSource would give up on an error), stream opens.
    last_event_id = base64.urlsafe_b64encode(json.dumps({"x": since}).encode()).rstrip(b"=").decode()
    out, _ = raw_http(target.port, (f"GET /sse HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {last_event_id}\r\n\r\n").encode(),
                      timeout=1.0)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    assert b'"client"' in out
    assert_alive(target)
    fds_back_to(target, base_fds)


@pytest.mark.parametrize("exp", ["9300000000000000", "1e300", "9223372036854775808", "18446744073709551616"])
def test_tokens_with_huge_expiry_connect(target, exp):
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(f'{{"sub":"u1","exp":{exp}}}'.encode()).rstrip(b"=").decode()
    sig = hmac.new(TOKEN_SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    ws = RawWS("127.0.0.1", target.port)
    try:
        reply = ws.call("connect", {"token": token})
        assert reply["result"]["user"] == "u1", reply
    finally:
        ws.close()
    # An infinite one (1e400 is not a finite double) is refused, not fatal.
    bad = make_jwt(TOKEN_SECRET, {"sub": "u1"}).split(".")
    payload = base64.urlsafe_b64encode(b'{"sub":"u1","exp":1e400}').rstrip(b"=").decode()
    sig = hmac.new(TOKEN_SECRET.encode(), f"{bad[0]}.{payload}".encode(), hashlib.sha256).digest()
    ws = RawWS("127.0.0.1", target.port)
    try:
        ws.send_json({"id": 1, "connect": {"token": f"{bad[0]}.{payload}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"}})
        how, code, _ = ws.read_until_close(5)
        assert (how, code) == ("close", 3500)
    finally:
        ws.close()
    assert_alive(target)


def test_long_idempotency_key_is_refused(target):
    key = "k" * 60_000
    status, answer, _ = rpc(target.port, [{"id": 1, "publish": {"channel": "x", "data": 1, "idempotencyKey": key}}])
    assert status == 200 and answer[0]["error"]["code"] == 107, answer
    ws = RawWS("127.0.0.1", target.port)
    try:
        ws.handshake()
        assert ws.call("publish", {"channel": "x", "data": 1, "idempotencyKey": key})["error"]["code"] == 107
        assert "result" in ws.call("publish", {"channel": "x", "data": 1, "idempotencyKey": "k" * 128})
    finally:
        ws.close()


# --------------------------------------------------------------------------
# Answers are bounded
# --------------------------------------------------------------------------


def fill_channel(node, channel: str, count: int, size: int) -> None:
    blob = "x" * size
    for i in range(count):
        node.api_result("publish", {"channel": channel, "data": {"n": i + 1, "blob": blob}})


def test_rpc_answers_are_bounded(target):
    fill_channel(target, "big", 100, 20_000)  # 2 MB of history, outbound limit 256 KiB
    # 20 history reads of the whole channel: it was one 72 MB answer per 830-byte request.
    status, answer, size = rpc(target.port, [{"id": i, "history": {"channel": "big"}} for i in range(1, 21)])
    assert status == 200
    assert size <= 262_144 + 20 * 200, size
    assert any(a.get("error", {}).get("code") == 106 for a in answer), "an over-limit history must say 106"
    assert len(answer) == 20, "every command gets its answer"
    # A small limit fits.
    status, answer, _ = rpc(target.port, [{"id": 1, "history": {"channel": "big", "limit": 3}}])
    assert [p["offset"] for p in answer[0]["result"]["publications"]] == [1, 2, 3]
    # More commands than allowed: refused whole.
    status, answer, _ = rpc(target.port, [{"id": i, "ping": {}} for i in range(1, 102)])
    assert status == 413 and answer["error"]["code"] == 106
    assert_alive(target)


def test_poll_answers_are_bounded_and_lose_nothing(target):
    fill_channel(target, "big", 60, 20_000)  # 1.2 MB of history, outbound limit 256 KiB
    epoch = target.api_result("history", {"channel": "big", "limit": 0})["epoch"]
    position = {"offset": 0, "epoch": epoch}
    seen: list[int] = []
    for _ in range(30):
        status, _, body = post(target.port, "/poll",
                               json.dumps({"subs": {"big": position}, "timeout": 0}).encode())
        assert status == 200
        assert len(body) <= 262_144 + 1024, len(body)
        items = json.loads(body)
        for item in items:
            if "pub" in item:
                seen.append(item["pub"]["offset"])
                position = {"offset": item["pub"]["offset"], "epoch": epoch}
            elif "position" in item:
                assert item["position"].get("recovered") is not False, item
                position = {"offset": item["position"]["offset"], "epoch": item["position"]["epoch"]}
        if seen and seen[-1] == 60:
            break
    assert seen == list(range(1, 61)), f"polls lost or doubled publications: {seen}"


def test_history_limit_is_clamped(target):
    fill_channel(target, "many", 1, 10)
    ws = RawWS("127.0.0.1", target.port)
    try:
        ws.handshake()
        reply = ws.call("history", {"channel": "many", "limit": 10**30})
        assert [p["offset"] for p in reply["result"]["publications"]] == [1]
        reply = ws.call("history", {"channel": "many", "limit": -10**30})
        assert "result" in reply
    finally:
        ws.close()


# --------------------------------------------------------------------------
# Tables keyed by client input
# --------------------------------------------------------------------------


def test_reads_of_unknown_channels_store_nothing(target):
    def read_batch(prefix: str, n: int) -> None:
        for start in range(0, n, 100):
            cmds = [{"id": i + 1, "history": {"channel": f"{prefix}{start + i}"}} for i in range(100)]
            status, answer, _ = rpc(target.port, cmds)
            assert status == 200 and all("result" in a for a in answer)
        ws = RawWS("127.0.0.1", target.port)
        try:
            ws.handshake()
            for i in range(200):
                assert "result" in ws.call("subscribe", {"channel": f"{prefix}s{i}"})
                assert "result" in ws.call("unsubscribe", {"channel": f"{prefix}s{i}"})
        finally:
            ws.close()

    read_batch("warm:", 4000)  # let the allocator settle
    base_rss = rss_kib(target.pid)
    keys = redis_dbsize(target.redis.port) if target.redis else None
    read_batch("cold:", 24_000)
    if target.redis:
        # Only the node's registry and presence structures may exist; no key per channel read. The
        # presence entry of the last subscribe goes with its unsubscribe, in the hub's next presence
        # batch: give that a moment (on a loaded machine the hash and sorted set of one channel were
        # still there when counted).
        wait_for(lambda: redis_dbsize(target.redis.port) <= keys, 10, "reads to leave no Redis keys behind")
    grown = rss_kib(target.pid) - base_rss
    # The old memory broker kept ~370 B per unknown name read (24k reads: ~8.6 MB).
    assert grown < 3 * 1024, f"RSS grew {grown} KiB over 24k reads of unknown channels"
    assert_alive(target)


def test_polls_are_capped_per_address(target):
    # Polls without a `client` field were unlimited; 16 may wait per address (the default).
    # A poll at the channel's current position waits for the next publication.
    # A channel with a stored position (one publication), so that the polls below surely wait.
    published = target.api_result("publish", {"channel": "capped", "data": {"n": 1}})
    waiting = json.dumps({"subs": {"capped": {"offset": published["offset"], "epoch": published["epoch"]}},
                          "timeout": 20}).encode()
    socks = []
    seen: list[int] = []

    def seventeenth_refused() -> bool:
        seen.append(post(target.port, "/poll", json.dumps({"subs": {"capped": {}}, "timeout": 0}).encode())[0])
        return seen[-1] == 429
    try:
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            body = waiting
            s.sendall(f"POST /poll HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            socks.append(s)

        def waiting_polls() -> int:
            for line in target.http("GET", "/metrics").text.splitlines():
                if line.startswith('switchboard_connections{transport="longpoll"}'):
                    return int(float(line.split()[-1]))
            return 0
        # All 16 must be counted before the 17th is sent: one sent earlier could take a slot for a
        # moment (timeout 0) and have one of the 16 refused (seen under load in CI).
        wait_for(lambda: waiting_polls() == 16, 10, "the node to count the 16 waiting polls")
        try:
            wait_for(seventeenth_refused, 15, "the 17th poll from one address to get 429")
        except AssertionError as e:
            # Say what the waiting polls got, if anything (they should still be waiting).
            answered = []
            for s in socks:
                s.setblocking(False)
                try:
                    answered.append(s.recv(200)[:60])
                except BlockingIOError:
                    answered.append(b"(waiting)")
                except OSError as err:
                    answered.append(repr(err).encode())
            polls = [line for line in target.http("GET", "/metrics").text.splitlines() if "poll" in line and not line.startswith("#")]
            raise AssertionError(f"{e}; statuses seen {sorted(set(seen))} in {len(seen)} tries; the 16 polls: "
                                 f"{sorted(collections.Counter(answered).items())}; metrics: {polls}") from None
        # Another address is not affected.
        body = b'{"subs":{"capped":{}},"timeout":0}'
        out, _ = raw_http(target.port, b"POST /poll HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                          % len(body) + body, source="127.0.0.2", timeout=5)
    finally:
        for s in socks:
            s.close()
    assert out.startswith(b"HTTP/1.1 200"), out[:100]
    # Once they are gone, the address may poll again.
    wait_for(lambda: post(target.port, "/poll", json.dumps({"subs": {"capped": {}}, "timeout": 0}).encode())[0] == 200,
             15, "polls allowed again after the waiting ones left")


# --------------------------------------------------------------------------
# Permissions: one rule for every transport
# --------------------------------------------------------------------------


@pytest.mark.parametrize("method,params", [
    ("presence", {"channel": "priv:room"}),
    ("presenceStats", {"channel": "priv:room"}),
    ("history", {"channel": "priv:room"}),
    ("publish", {"channel": "priv:room", "data": 1}),
    ("subscribe", {"channel": "priv:room"}),
])
def test_closed_namespace_refuses_anonymous_on_every_transport(target, method, params):
    token = make_jwt(TOKEN_SECRET, {"sub": "alice", "exp": int(time.time()) + 3600, "info": {"secret": "s"}})
    # A user is present, with token info an anonymous client must not see.
    user = RawWS("127.0.0.1", target.port)
    try:
        assert "result" in user.call("connect", {"token": token})
        assert "result" in user.call("subscribe", {"channel": "priv:room"})
        # WebSocket
        anon = RawWS("127.0.0.1", target.port)
        try:
            anon.handshake()
            assert anon.call(method, params)["error"]["code"] == 103
        finally:
            anon.close()
        # the same for the user: allowed
        if method != "subscribe":
            assert "result" in user.call(method, params), method
        if method != "subscribe":
            # /rpc, anonymous and with the user's token
            status, answer, _ = rpc(target.port, [{"id": 1, method: params}])
            assert status == 200 and answer[0]["error"]["code"] == 103, answer
            status, answer, _ = rpc(target.port, [{"id": 1, method: params}], headers=f"Authorization: Bearer {token}\r\n")
            assert status == 200 and "result" in answer[0], answer
        else:
            # /poll follows channels: the anonymous poll gets the error item
            status, _, body = post(target.port, "/poll", json.dumps({"subs": {"priv:room": {}}, "timeout": 0}).encode())
            items = json.loads(body)
            assert status == 200 and items[0]["error"]["code"] == 103, items
        # SSE: commands by POST, replies on the stream
        if method != "subscribe":
            sse = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            try:
                sse.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while b'"session"' not in data:
                    data += sse.recv(65536)
                session = json.loads(data.split(b"data: ", 1)[1].split(b"\n", 1)[0])["result"]["session"]
                status, _, _ = post(target.port, f"/sse?session={session}", json.dumps({"id": 2, method: params}).encode())
                assert status == 202
                deadline = time.monotonic() + 5
                while b'"id":2' not in data and time.monotonic() < deadline:
                    data += sse.recv(65536)
                reply = json.loads(data[data.index(b'{"id":2'):].split(b"\n", 1)[0])
                assert reply["error"]["code"] == 103, reply
            finally:
                sse.close()
    finally:
        user.close()


# --------------------------------------------------------------------------
# Deadlines and caps on sockets
# --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/ws", "/sse"])
def test_slowloris_head_is_cut_at_the_deadline(target, path):
    base_fds = fd_count(target.pid)
    head = (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"X-Padding: {'a' * 200}\r\n\r\n").encode()
    async def healthy():
        async with SteadyTraffic(target, interval=0.05, max_publications=200) as steady:
            import asyncio
            out, took = await asyncio.to_thread(raw_http, target.port, head, 8.0, "127.0.0.1", 0.5)
            await steady.check()
            return out, took
    out, took = run(healthy(), timeout=30)
    assert took < 4.5, f"a head trickled at 2 bytes/s kept its socket {took:.1f} s (head deadline 2 s)"
    assert out == b"" or out.startswith(b"HTTP/1.1 408"), out[:100]
    fds_back_to(target, base_fds)
    assert_alive(target)


def test_slow_body_gets_408_and_large_bodies_413_at_once(target):
    # A body trickled past the request deadline (3 s).
    body = json.dumps({"subs": {"x": {}}, "timeout": 0}).encode()
    out, took = raw_http(target.port, f"POST /poll HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode(),
                         timeout=8)
    assert out.startswith(b"HTTP/1.1 408"), out[:100]
    assert took < 5
    # A declared body over the limit is refused before it is sent.
    out, took = raw_http(target.port, b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", timeout=5)
    assert out.startswith(b"HTTP/1.1 413"), out[:100]
    assert took < 4  # refused at once, not after the 5 s read
    # A chunked body is refused as soon as it passes the limit, not buffered to 1 MB.
    s = socket.create_connection(("127.0.0.1", target.port), timeout=5)
    try:
        s.sendall(b"POST /sse?session=a.b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        answer = b""
        s.setblocking(False)
        while sent < 1_000_000 and not answer:
            try:
                s.send(b"8000\r\n" + b"a" * 0x8000 + b"\r\n")
                sent += 0x8000
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            try:
                answer = s.recv(4096)
            except BlockingIOError:
                time.sleep(0.01)
            except ConnectionResetError:
                break
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert sent < 1_000_000, f"the node read {sent} bytes before refusing a 64 KiB limit"
    finally:
        s.close()
    assert_alive(target)


def test_api_without_the_key_is_refused_from_the_head(target):
    """A `POST /api/...` without the key is answered 401 from its head: a body of up to
    maxRequestBodySize is neither read nor held for the request deadline."""
    out, took = raw_http(target.port, b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey wrong\r\n"
                         b"Content-Length: 1000000\r\n\r\n", timeout=5)
    assert out.startswith(b"HTTP/1.1 401"), out[:100]
    assert took < 2, f"answered after {took:.1f} s: it waited for the body"
    out, took = raw_http(target.port, b"POST /api/info HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", timeout=5)
    assert out.startswith(b"HTTP/1.1 401") and took < 2, (out[:100], took)
    # With the key, the API still works.
    assert target.api_result("info", {})["nodes"], "the API with its key"
    assert_alive(target)


def zrange_calls(redis_port: int) -> int:
    for line in redis_command(redis_port, "INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_zrange:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_stats_reads_the_registry_at_most_once_a_second(target):
    """`GET /stats` needs no key: 200 requests at once cost the registry a read or two (each is a
    scan in Redis), not 200; and the answer is still the cluster's."""
    before = zrange_calls(target.redis.port) if target.redis else 0
    started = time.monotonic()
    for _ in range(200):
        r = target.http("GET", "/stats", timeout=5)
        assert r.status_code == 200 and r.json()["nodes"] >= 1, (r.status_code, r.text[:200])
    took = time.monotonic() - started
    if target.redis:
        reads = zrange_calls(target.redis.port) - before
        assert reads <= math.ceil(took) + 4, f"{reads} registry reads for 200 requests in {took:.1f} s (the node reads it for itself too)"
    assert_alive(target)


def test_a_response_that_is_never_read_does_not_hold_the_socket(node_factory):
    """A client that asks for a large answer (a poll of 100 stored publications of 60 KB, 6 MB,
    under an outbound limit of 16 MB, so the slow-consumer cut does not apply) with
    `Connection: close` and never reads it (a zero window) holds its socket no longer than the
    head timeout (2 s) after the response: the node closes it with the answer unsent."""
    # 30 MB of history read from one address: more than its default budget (16 MiB).
    target = node_factory.start("--head-timeout", "2", "--outbound-limit", "16777216", "--history-burst-bytes", "100000000")
    ch = "big:history"
    blob = "x" * 60_000
    for _ in range(100):
        target.api_result("publish", {"channel": ch, "data": blob})
    body = json.dumps({"subs": {ch: {"offset": 0, "epoch": target.api_result("history", {"channel": ch, "limit": 0})["epoch"]}},
                       "timeout": 0}).encode()
    baseline = settled_fd_count(target.pid)
    socks = []
    try:
        for _ in range(5):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.connect(("127.0.0.1", target.port))
            s.sendall(f"POST /poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            socks.append(s)
        time.sleep(1)
        assert fd_count(target.pid) >= baseline + 5, "the answers were taken whole by the kernel: nothing to test"
        fds_back_to(target, baseline, timeout=6)
    finally:
        for s in socks:
            s.close()
    assert_alive(target)


def test_bare_cr_in_a_head_is_refused(target):
    for path in ("/healthz", "/ws"):
        out, took = raw_http(target.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX: a\rB: c\r\n\r\n".encode(),
                             timeout=5)
        assert out.startswith(b"HTTP/1.1 400"), (path, out[:100])
        assert took < 4, "the connection must be closed after the 400"


def test_handshakes_abandoned_mid_body_leave_nothing_behind(target):
    """A WebSocket handshake that announces a body (Content-Length or chunked), closed before the
    body: each one left its connection's whole pipeline in memory (5.5 KB on a release build) until
    the node refused handshakes with a body. 2,000 of them may not grow the node by 1 KB each, and
    a handshake without a body still upgrades."""
    head = ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n")

    def abandon(count: int, extra: str) -> None:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            s.sendall((head + extra + "\r\n").encode())
            s.close()

    def grown_over_2000() -> int:
        before = rss_kib(target.pid)
        abandon(1000, "Content-Length: 5\r\n")
        abandon(1000, "Transfer-Encoding: chunked\r\n")
        fds_back_to(target, base_fds)
        time.sleep(0.5)
        return rss_kib(target.pid) - before

    base_fds = fd_count(target.pid)
    abandon(300, "Content-Length: 5\r\n")  # warm-up: the allocator's pools, NIO's buffers
    fds_back_to(target, base_fds)
    grown = grown_over_2000()
    if grown * 1024 / 2000 >= 1024:
        # A leak grows the node again in a second round; a one-off step (an allocator arena grown
        # for something else the shared node did meanwhile, seen once in CI: 2.3 MB) does not.
        grown = min(grown, grown_over_2000())
    assert grown * 1024 / 2000 < 1024, f"the node grew {grown} KiB over 2,000 abandoned handshakes, twice"
    out, _ = raw_http(target.port, (head + "Connection: Upgrade\r\nContent-Length: 0\r\n\r\n").encode(), timeout=1)
    assert out.startswith(b"HTTP/1.1 101 "), out[:100]
    out, _ = raw_http(target.port, (head + "Connection: Upgrade\r\nContent-Length: 5\r\n\r\nabcde").encode(), timeout=3)
    assert out.startswith(b"HTTP/1.1 4"), out[:100]
    assert_alive(target)


def test_connection_caps(node_factory):
    node = node_factory.start("--max-connections", "30", "--max-connections-per-ip", "10")
    base_fds = fd_count(node.pid)
    held: list[Any] = []
    try:
        for _ in range(10):
            held.append(RawWS("127.0.0.1", node.port))
        # The 11th WebSocket from the address: the handshake, then 3504.
        extra = RawWS("127.0.0.1", node.port)
        assert extra.read_until_close(5)[:2] == ("close", 3504)
        extra.close()
        # The 11th HTTP request from the address: 503 with Retry-After.
        out, _ = raw_http(node.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
        status, headers, _ = parse_response(out)
        assert status == 503 and "retry-after" in headers
        # Another address is not affected, up to the node's cap.
        for source in ("127.0.0.2", "127.0.0.3"):
            for _ in range(10):
                s = socket.socket()
                s.bind((source, 0))
                s.settimeout(5)
                s.connect(("127.0.0.1", node.port))
                held.append(s)
                # Admitted for sure once it has its answer (accepts run on several event loops).
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
        out, _ = raw_http(node.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5, source="127.0.0.4")
        assert parse_response(out)[0] == 503, "the node cap (30) must refuse the 31st connection"
    finally:
        for ws in held:
            ws.close()
    fds_back_to(node, base_fds)
    # Room again once they are gone.
    wait_for(lambda: node.http("GET", "/healthz", timeout=5).status_code == 200, 5, "connections admitted again")
    assert node.http("GET", "/metrics").text.count('switchboard_refused_connections_total{reason="') == 5  # node, address, rate, shed, user


def test_a_flood_of_bad_frames_does_not_touch_other_clients(target):
    base_fds = fd_count(target.pid)

    async def attack():
        import asyncio
        async with SteadyTraffic(target, interval=0.02, max_publications=500) as steady:
            def hostile():
                for i in range(100):
                    ws = RawWS("127.0.0.1", target.port)
                    try:
                        kind = i % 5
                        if kind == 0:
                            ws.send(ws_frame(0x1, b"{" * 10_000))          # malformed JSON
                        elif kind == 1:
                            ws.send(ws_frame(0x1, b"x" * 70_000))          # oversize message
                        elif kind == 2:
                            ws.send(b"\x81\xff" + struct.pack("!Q", 2**63) + os.urandom(4))  # absurd length
                        elif kind == 3:
                            ws.send(ws_frame(0x1, json.dumps({"id": 1, "nosuch": {}}).encode()))
                            ws.send(ws_frame(OP_CLOSE, struct.pack("!H", 1000)))
                        else:
                            # connected, then an unmasked frame (a protocol error: 1002)
                            ws.send(ws_frame(0x1, b'{"id":1,"connect":{}}') + b"\x81\x05hello")
                        ws.read_until_close(5)
                    except AssertionError:
                        raise
                    except Exception:
                        pass
                    finally:
                        ws.close()
            await asyncio.to_thread(hostile)
            await steady.check()
    run(attack(), timeout=60)
    assert_alive(target)
    fds_back_to(target, base_fds)


def test_trusted_proxy_is_not_held_to_the_address_cap(node_factory):
    node = node_factory.start("--max-connections-per-ip", "2", "--trusted-proxy", "127.0.0.1")
    held: list[RawWS] = []
    try:
        for _ in range(5):
            ws = RawWS("127.0.0.1", node.port)
            held.append(ws)
            assert "result" in ws.call("connect", {})
        # Another address is held to the cap.
        out, _ = raw_http(node.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5, source="127.0.0.2")
        assert out.startswith(b"HTTP/1.1 200"), out[:80]
        socks = []
        try:
            for _ in range(2):
                s = socket.socket()
                s.bind(("127.0.0.2", 0))
                s.connect(("127.0.0.1", node.port))
                s.settimeout(5)
                socks.append(s)
                # Admitted for sure once it has its answer (accepts run on several event loops).
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
            out, _ = raw_http(node.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5, source="127.0.0.2")
            assert parse_response(out)[0] == 503
        finally:
            for s in socks:
                s.close()
    finally:
        for ws in held:
            ws.close()


# --------------------------------------------------------------------------
# Peers that stop reading, or never start: every socket has a deadline
# --------------------------------------------------------------------------


def non_reading_socket(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A connection to the node whose receive window stays small: the test never reads from it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def test_pipelined_requests_whose_answers_are_never_read_do_not_pile_up(node_factory):
    """HTTP/1.1 lets a client send requests without waiting for answers. One that sends thousands
    (here `GET /metrics`, each answer tens of KB) and reads none must not make the node queue every
    answer in memory (NIO hands over the next request once an answer is written, not sent): past the
    outbound limit the node ends the connection."""
    target = node_factory.start("--head-timeout", "2", "--outbound-limit", "262144")
    # (Asked on a connection that closes, so that the baseline below holds no kept-alive one.)
    answer = len(raw_http(target.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0])
    count = min(20_000, (400 << 20) // max(answer, 1) + 1)  # 400 MB of answers if all were queued
    baseline_fds = fd_count(target.pid)
    before = peak_rss_kib(target.pid)
    s = non_reading_socket(target.port)
    try:
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        try:
            for _ in range(count // 100):
                s.sendall(request * 100)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the node closed the connection (or stopped reading it): what is asked of it
        fds_back_to(target, baseline_fds, slack=0, timeout=10)
        # The peak: the node gives memory back once the connection is gone.
        grown = (peak_rss_kib(target.pid) - before) / 1024
        assert grown < 64, f"the node's peak grew by {grown:.0f} MB for {count} unread answers of {answer} B"
    finally:
        s.close()
    assert_alive(target)


def test_a_websocket_that_never_sends_connect_is_closed(node_factory):
    """An upgraded WebSocket that sends nothing is closed with 3501 at the connect deadline (10 s),
    not held for good."""
    target = node_factory.start()
    baseline = fd_count(target.pid)
    ws = RawWS("127.0.0.1", target.port, timeout=20)
    try:
        started = time.monotonic()
        how, code, _ = ws.read_until_close(timeout=20)
        took = time.monotonic() - started
        assert (how, code) == ("close", 3501), (how, code)
        assert 8 < took < 16, f"closed after {took:.1f} s"
    finally:
        ws.sock.close()
    fds_back_to(target, baseline, slack=1, timeout=10)
    assert_alive(target)


def _loopback_send_buffer_max() -> int:
    """The most a TCP send buffer grows to here (the kernel takes that much unread data off a node)."""
    try:
        return int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


def test_a_websocket_close_behind_unread_data_does_not_hold_the_socket(node_factory):
    """A client that stops reading with data queued for it (under the slow-consumer limit), then
    sends a Close: the node's reply waits behind the data, and the socket is closed after the close
    timeout anyway."""
    queued = _loopback_send_buffer_max() + (4 << 20)
    target = node_factory.start("--outbound-limit", str(queued + (8 << 20)))
    baseline = fd_count(target.pid)
    ws = RawWS("127.0.0.1", target.port, rcvbuf=4096, timeout=10)
    try:
        assert "result" in ws.call("connect", {})
        assert "result" in ws.call("subscribe", {"channel": "unread:ws"})
        blob = "x" * 50_000
        # More than the kernel takes on loopback (a send buffer grows to tcp_wmem's maximum), less
        # than the outbound limit, so the node holds the rest and its close waits behind it.
        for _ in range(queued // 50_000 + 1):
            target.api_result("publish", {"channel": "unread:ws", "data": blob})
        time.sleep(0.5)
        assert fd_count(target.pid) >= baseline + 1
        ws.send_frame(OP_CLOSE, struct.pack("!H", 1000))
        fds_back_to(target, baseline, slack=0, timeout=8)
    finally:
        ws.sock.close()
    assert_alive(target)


def test_an_sse_stream_ended_while_unread_does_not_hold_the_socket(node_factory):
    """An SSE client that stops reading is ended as a slow consumer; the end of its response cannot
    leave either, and the socket is closed after the head timeout anyway."""
    target = node_factory.start("--head-timeout", "2", "--outbound-limit", "262144")
    baseline = fd_count(target.pid)
    s = non_reading_socket(target.port)
    try:
        connect = urllib.parse.quote(json.dumps({"subs": {"unread:sse": {}}}))
        s.sendall(f"GET /sse?connect={connect} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        assert s.recv(64).startswith(b"HTTP/1.1 200"), "no stream"
        time.sleep(0.5)  # subscribed
        blob = "x" * 50_000
        # Past what the kernel takes on loopback (tcp_wmem's maximum) and then the 256 KB outbound
        # limit, so the stream is ended as a slow consumer, and its end cannot leave either.
        for _ in range((_loopback_send_buffer_max() + (2 << 20)) // 50_000 + 1):
            target.api_result("publish", {"channel": "unread:sse", "data": blob})
        fds_back_to(target, baseline, slack=0, timeout=8)
    finally:
        s.close()
    assert_alive(target)
