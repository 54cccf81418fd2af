"""Helpers for the Switchboard end-to-end tests.

Everything here talks to a real `switchboard serve` process over loopback:
- `Node`: a started server process (see conftest.py for the fixtures).
- `Client`: a protocol client on top of `websockets` (asyncio). A reader task
  dispatches replies to the awaiting `call`, answers server pings `{}` (unless
  told not to) and keeps every push in arrival order.
- `RawWS`: a WebSocket client on a plain socket that builds frames by hand,
  for frame-level tests and for a consumer that stops reading.
- `SteadyTraffic`: a publisher/subscriber pair that checks the node keeps
  delivering while a test throws bad input at it.
- `make_jwt`: HS256 tokens with the standard library only.

No loop here is unbounded: every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import requests
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LISTEN_RE = re.compile(r"ws://(\[[^\]]+\]|[^\s/:]+):(\d+)/ws")

DEFAULT_TIMEOUT = 5.0
TOKEN_SECRET = "s3cret"  # --token-secret of the token_node fixture


def binary_path() -> str:
    path = os.environ.get("SWITCHBOARD_BIN", ".build/debug/switchboard")
    if not os.path.isabs(path):
        path = os.path.join(REPO_ROOT, path)
    return path


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------


class NodeStartError(RuntimeError):
    pass


class Node:
    """One running `switchboard serve` process."""

    def __init__(self, args: list[str], api_key: str, log_path: str, env: dict[str, str] | None = None,
                 start_timeout: float = 30.0):
        self.api_key = api_key
        self.log_path = log_path
        self.args = args
        self._log = open(log_path, "wb")
        self.stdout_lines: list[str] = []
        self._line_event = threading.Event()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        # The server must not pick up proxies or anything else from the caller.
        full_env.update(env or {})
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=full_env,
            cwd=REPO_ROOT,
        )
        self.pid = self.process.pid
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        try:
            self._wait_listening(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:  # ends at EOF, i.e. when the process exits
            self.stdout_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._line_event.set()
        self._line_event.set()

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stdout_lines):
                m = LISTEN_RE.search(line)
                if m:
                    self.host = m.group(1).strip("[]")
                    self.port = int(m.group(2))
                    self.listen_line = line
                    host = m.group(1)
                    self.ws_url = f"ws://{host}:{self.port}/ws"
                    self.echo_url = f"ws://{host}:{self.port}/echo"
                    self.http_url = f"http://{host}:{self.port}"
                    return
            if self.process.poll() is not None:
                raise NodeStartError(
                    f"switchboard exited with {self.process.returncode} before listening\n"
                    f"args: {self.args}\nstdout: {self.stdout_lines}\nstderr:\n{self.log_tail()}")
            self._line_event.wait(0.05)
            self._line_event.clear()
        raise NodeStartError(f"no 'ws://HOST:PORT/ws' line on stdout within {timeout}s; "
                             f"stdout: {self.stdout_lines}\nstderr:\n{self.log_tail()}")

    # -- lifecycle ---------------------------------------------------------

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`. Safe to call twice."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout)
        finally:
            if self.process.stdout is not None:
                try:
                    self.process.stdout.close()
                except OSError:
                    pass
            self._reader.join(1.0)
            try:
                self._log.close()
            except OSError:
                pass

    def log_tail(self, n: int = 60) -> str:
        try:
            self._log.flush()
        except (OSError, ValueError):
            pass
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    # -- HTTP ---------------------------------------------------------------

    def http(self, method: str, path: str, timeout: float = DEFAULT_TIMEOUT, **kw: Any) -> requests.Response:
        """One HTTP request to the node; never goes through a proxy."""
        with requests.Session() as s:
            s.trust_env = False
            return s.request(method, self.http_url + path, timeout=timeout, **kw)

    def api(self, method: str, body: Any = None, key: str | None = "default", timeout: float = DEFAULT_TIMEOUT,
            raw_body: bytes | None = None) -> requests.Response:
        headers = {}
        if key == "default":
            key = self.api_key
        if key is not None:
            headers["Authorization"] = f"apikey {key}"
        if raw_body is not None:
            headers["Content-Type"] = "application/json"
            return self.http("POST", f"/api/{method}", timeout=timeout, data=raw_body, headers=headers)
        return self.http("POST", f"/api/{method}", timeout=timeout, json=body if body is not None else {},
                         headers=headers)

    def api_result(self, method: str, body: Any = None) -> Any:
        r = self.api(method, body)
        assert r.status_code == 200, f"API {method} {body!r}: HTTP {r.status_code} {r.text[:500]}"
        doc = r.json()
        assert "error" not in doc, f"API {method} {body!r}: error {doc['error']}"
        assert "result" in doc, f"API {method}: no result in {doc}"
        return doc["result"]

    def api_error(self, method: str, body: Any = None) -> dict:
        r = self.api(method, body)
        assert r.status_code == 200, f"API {method}: HTTP {r.status_code} {r.text[:500]}"
        doc = r.json()
        assert "error" in doc, f"API {method} {body!r}: expected an error, got {doc}"
        return doc["error"]

    async def aapi_result(self, method: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self.api_result, method, body)

    async def aapi_error(self, method: str, body: Any = None) -> dict:
        return await asyncio.to_thread(self.api_error, method, body)

    async def apublish(self, channel: str, data: Any, **extra: Any) -> dict:
        return await self.aapi_result("publish", {"channel": channel, "data": data, **extra})


# --------------------------------------------------------------------------
# Protocol client
# --------------------------------------------------------------------------


class ClosedBeforeReply(Exception):
    def __init__(self, code: int | None, reason: str | None):
        super().__init__(f"connection closed before the reply (close code {code}, reason {reason!r})")
        self.code = code
        self.reason = reason


_OPEN_CLIENTS: list["Client"] = []


class Client:
    """A Switchboard protocol v1 client over one WebSocket connection."""

    def __init__(self, ws: Any, auto_pong: bool = True):
        self.ws = ws
        self.auto_pong = auto_pong
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.pushes: list[dict] = []          # every push (no replies, no pings), arrival order
        self.push_times: list[float] = []     # monotonic arrival time of each push
        self._unconsumed: list[dict] = []     # pushes not yet taken by wait_push
        self.ping_times: list[float] = []     # server pings `{}`
        self.unexpected_replies: list[dict] = []
        self.bad_frames: list[Any] = []       # frames that are not JSON objects
        self.close_code: int | None = None    # from the server's close frame, None when none came
        self.close_reason: str | None = None
        self.closed_at: float | None = None
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self.info: dict = {}                  # connect result
        self.id: str | None = None
        self._reader = asyncio.create_task(self._read_loop())
        _OPEN_CLIENTS.append(self)

    # -- reading --------------------------------------------------------------

    def _notify(self) -> None:
        ev = self._changed
        self._changed = asyncio.Event()
        ev.set()

    async def _read_loop(self) -> None:
        try:
            async for msg in self.ws:
                if isinstance(msg, bytes):
                    self.bad_frames.append(msg)
                    self._notify()
                    continue
                for part in msg.split("\n"):
                    if not part.strip():
                        continue
                    try:
                        obj = json.loads(part)
                    except ValueError:
                        self.bad_frames.append(part)
                        continue
                    if not isinstance(obj, dict):
                        self.bad_frames.append(obj)
                        continue
                    await self._dispatch(obj)
                self._notify()
        except ConnectionClosed:
            pass
        except Exception as e:  # pragma: no cover - surfaced through bad_frames
            self.bad_frames.append(repr(e))
        finally:
            rcvd = self.ws.protocol.close_rcvd
            self.close_code = rcvd.code if rcvd is not None else None
            self.close_reason = rcvd.reason if rcvd is not None else None
            self.closed_at = time.monotonic()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ClosedBeforeReply(self.close_code, self.close_reason))
            self._pending.clear()
            self.closed.set()
            self._notify()

    async def _dispatch(self, obj: dict) -> None:
        if "id" in obj:
            fut = self._pending.pop(obj["id"], None)
            if fut is None or fut.done():
                self.unexpected_replies.append(obj)
            else:
                fut.set_result(obj)
        elif obj == {}:
            self.ping_times.append(time.monotonic())
            if self.auto_pong:
                try:
                    await self.ws.send("{}")
                except ConnectionClosed:
                    pass
        else:
            self.pushes.append(obj)
            self.push_times.append(time.monotonic())
            self._unconsumed.append(obj)

    async def wait_until(self, pred: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT,
                         what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"last pushes: {self.pushes[-5:]}; close code {self.close_code}")
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_push(self, pred: Callable[[dict], bool] = lambda p: True,
                        timeout: float = DEFAULT_TIMEOUT, what: str = "push") -> dict:
        """Take (remove from the unconsumed queue) the first push matching `pred`."""
        found: list[dict] = []

        def check() -> bool:
            for i, p in enumerate(self._unconsumed):
                if pred(p):
                    found.append(self._unconsumed.pop(i))
                    return True
            return False

        await self.wait_until(check, timeout, what)
        return found[0]

    async def wait_pub(self, channel: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
        p = await self.wait_push(lambda m: m.get("channel") == channel and "pub" in m, timeout,
                                 f"pub in {channel!r}")
        return p["pub"]

    def pubs(self, channel: str) -> list[dict]:
        return [p["pub"] for p in self.pushes if p.get("channel") == channel and "pub" in p]

    async def wait_pubs(self, channel: str, n: int, timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
        await self.wait_until(lambda: len(self.pubs(channel)) >= n, timeout,
                              f"{n} pubs in {channel!r} (have {len(self.pubs(channel))})")
        return self.pubs(channel)

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"connection not closed by the server within {timeout}s")
        return self.close_code

    # -- commands -------------------------------------------------------------

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send(text)

    async def call(self, method: str, params: Any = None, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """Send one command, return the whole reply (`result` or `error`)."""
        cid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        if self.closed.is_set():
            self._pending.pop(cid, None)
            raise ClosedBeforeReply(self.close_code, self.close_reason)
        try:
            await self.ws.send(json.dumps({"id": cid, method: params if params is not None else {}}))
        except ConnectionClosed:
            pass  # the reader resolves the future with ClosedBeforeReply
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self._pending.pop(cid, None)
            raise AssertionError(f"no reply to {method} {params!r} within {timeout}s")
        assert reply.get("id") == cid
        return reply

    async def result(self, method: str, params: Any = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
        reply = await self.call(method, params, timeout)
        assert "error" not in reply, f"{method} {params!r} failed: {reply['error']}"
        assert "result" in reply, f"{method}: reply without result: {reply}"
        return reply["result"]

    async def error(self, method: str, params: Any = None, timeout: float = DEFAULT_TIMEOUT) -> dict:
        reply = await self.call(method, params, timeout)
        assert "error" in reply, f"{method} {params!r}: expected an error, got {reply}"
        err = reply["error"]
        assert isinstance(err.get("code"), int) and isinstance(err.get("message"), str), err
        return err

    async def subscribe(self, channel: str, **params: Any) -> dict:
        return await self.result("subscribe", {"channel": channel, **params})

    async def publish(self, channel: str, data: Any, **params: Any) -> dict:
        return await self.result("publish", {"channel": channel, "data": data, **params})

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:
            pass
        if not self._reader.done():
            self._reader.cancel()
        try:
            await self._reader
        except BaseException:
            pass
        if self in _OPEN_CLIENTS:
            _OPEN_CLIENTS.remove(self)


async def open_ws(url: str, **kw: Any) -> Any:
    opts = dict(compression=None, ping_interval=None, max_size=None, open_timeout=5,
                close_timeout=2, proxy=None)
    opts.update(kw)
    return await ws_connect(url, **opts)


async def open_client(node: Node, auto_pong: bool = True, path: str = "/ws", **ws_kw: Any) -> Client:
    """An open WebSocket with no `connect` command sent yet."""
    ws = await open_ws(f"ws://{node.host}:{node.port}{path}", **ws_kw)
    return Client(ws, auto_pong=auto_pong)


async def connect(node: Node, token: str | None = None, subs: dict | None = None, auto_pong: bool = True,
                  **params: Any) -> Client:
    """Open a WebSocket and do the `connect` handshake; asserts success."""
    c = await open_client(node, auto_pong=auto_pong)
    p: dict = dict(params)
    if token is not None:
        p["token"] = token
    if subs is not None:
        p["subs"] = subs
    c.info = await c.result("connect", p)
    c.id = c.info.get("client")
    assert isinstance(c.id, str) and c.id, f"connect result without client id: {c.info}"
    return c


async def connect_expect_close(node: Node, token: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[int | None, Any]:
    """Send `connect` with `token`; return (close code, reply or None)."""
    c = await open_client(node)
    reply = None
    try:
        reply = await c.call("connect", {"token": token}, timeout)
    except ClosedBeforeReply:
        pass
    code = await c.wait_closed(timeout)
    await c.close()
    return code, reply


async def close_all_clients() -> None:
    for c in list(_OPEN_CLIENTS):
        await c.close()


def run(coro: Any, timeout: float = 60.0) -> Any:
    """Run one async test body with an overall deadline; closes its clients."""

    async def main() -> Any:
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            await close_all_clients()

    return asyncio.run(main())


# --------------------------------------------------------------------------
# Steady traffic: the node keeps serving healthy clients
# --------------------------------------------------------------------------


class SteadyTraffic:
    """A WS publisher publishes to `channel` every `interval` seconds; a WS
    subscriber must see every publication, in order, promptly.

    `await check()` asserts that everything published so far has arrived
    within `timeout`; leaving the `async with` block stops the publisher and
    asserts the subscriber saw offsets 1..N with the right data, no gap, no
    duplicate."""

    def __init__(self, node: Node, channel: str = "health:steady", interval: float = 0.02,
                 max_publications: int = 3000):
        self.node = node
        self.channel = channel
        self.interval = interval
        self.max_publications = max_publications
        self.published: list[int] = []   # offsets acknowledged to the publisher
        self._stop = asyncio.Event()

    async def __aenter__(self) -> "SteadyTraffic":
        self.sub = await connect(self.node)
        await self.sub.subscribe(self.channel)
        self.pub = await connect(self.node)
        self._task = asyncio.create_task(self._publish_loop())
        await self.check()
        return self

    async def _publish_loop(self) -> None:
        for n in range(1, self.max_publications + 1):
            if self._stop.is_set():
                return
            r = await self.pub.publish(self.channel, {"steady": n})
            self.published.append(r["offset"])
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    async def check(self, timeout: float = 2.0) -> None:
        # Wait for at least one fresh publication, then for its delivery.
        start = len(self.published)
        deadline = time.monotonic() + timeout
        while len(self.published) <= start:
            assert not self._task.done(), f"steady publisher stopped: {self._task.exception()!r}"
            assert time.monotonic() < deadline, "steady publisher made no progress"
            await asyncio.sleep(0.01)
        target = self.published[-1]
        await self.sub.wait_until(
            lambda: any(p.get("offset", 0) >= target for p in self.sub.pubs(self.channel)[-20:]),
            max(0.1, deadline - time.monotonic()),
            f"healthy subscriber to receive offset {target} promptly")

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop.set()
        await asyncio.wait_for(self._task, 5)
        if exc_type is not None:
            return
        n = len(self.published)
        assert self.published == list(range(1, n + 1)), f"publish offsets not 1..{n}: {self.published[:10]}..."
        await self.sub.wait_pubs(self.channel, n, timeout=5)
        pubs = self.sub.pubs(self.channel)
        assert [p["offset"] for p in pubs] == list(range(1, n + 1)), "healthy subscriber saw a gap/dup/reorder"
        assert [p["data"] for p in pubs] == [{"steady": i} for i in range(1, n + 1)]


# --------------------------------------------------------------------------
# Raw WebSocket on a plain socket
# --------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
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
        key = os.urandom(4)
        payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
        hdr += key
    return hdr + payload


class RawEOF(Exception):
    pass


class RawWS:
    """Blocking WebSocket client on a plain TCP socket."""

    def __init__(self, host: str, port: int, path: str = "/ws", rcvbuf: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        self.buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if time.monotonic() > deadline or len(self.buf) > 65536:
                raise AssertionError(f"no upgrade response: {self.buf[:200]!r}")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"EOF during upgrade: {self.buf[:200]!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].split(" ")[1] == "101", f"upgrade refused: {lines[0]}"
        expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                                    .digest()).decode()
        headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        assert headers.get("sec-websocket-accept") == expected, f"bad Sec-WebSocket-Accept: {headers}"
        self._ids = itertools.count(1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw: Any) -> None:
        self.sock.sendall(ws_frame(opcode, payload, **kw))

    def send_json(self, obj: Any) -> None:
        self.send_frame(OP_TEXT, json.dumps(obj).encode())

    def _need(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("raw read timed out")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("raw read timed out")
            if not chunk:
                raise RawEOF()
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[bool, int, bytes]:
        deadline = time.monotonic() + timeout
        b0, b1 = self._need(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8, deadline))[0]
        key = self._need(4, deadline) if b1 & 0x80 else None
        payload = self._need(n, deadline)
        if key:
            payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_json(self, timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
        """The JSON objects of the next text frame (skips server pings)."""
        deadline = time.monotonic() + timeout
        while True:
            fin, op, payload = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise AssertionError(f"unexpected close {code} {payload[2:]!r}")
            if op != OP_TEXT:
                continue
            objs = [json.loads(p) for p in payload.decode().split("\n") if p.strip()]
            objs = [o for o in objs if o != {}]
            if objs:
                return objs

    def call(self, method: str, params: Any, timeout: float = DEFAULT_TIMEOUT) -> dict:
        cid = next(self._ids)
        self.send_json({"id": cid, method: params})
        deadline = time.monotonic() + timeout
        while True:
            for obj in self.recv_json(max(0.0, deadline - time.monotonic())):
                if obj.get("id") == cid:
                    return obj

    def read_until_close(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, int | None, int]:
        """Read and discard frames until the server ends the connection.

        Returns (how, close code, data frames seen) with how in
        'close' (close frame), 'eof' (FIN without close frame), 'reset'."""
        deadline = time.monotonic() + timeout
        frames = 0
        while True:
            try:
                fin, op, payload = self.recv_frame(max(0.0, deadline - time.monotonic()))
            except RawEOF:
                return "eof", None, frames
            except ConnectionResetError:
                return "reset", None, frames
            except TimeoutError:
                raise AssertionError(f"server did not end the connection within {timeout}s "
                                     f"({frames} data frames read)")
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return "close", code, frames
            frames += 1

    def handshake(self) -> dict:
        reply = self.call("connect", {})
        assert "result" in reply, reply
        return reply["result"]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt(secret: str, claims: dict, header: dict | None = None) -> str:
    h = _b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    p = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{_b64url(sig)}"


def user_token(secret: str, user: str, ttl: float = 3600, **claims: Any) -> str:
    return make_jwt(secret, {"sub": user, "exp": int(time.time() + ttl), **claims})
