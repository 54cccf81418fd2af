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
- `RedisServer`: a `redis-server` process on a loopback port (for the Redis
  broker tests), killable and restartable on the same port.
- `ResilientSubscriber`: a client that survives node deaths and broker
  trouble the way the protocol says a client should (reconnect, re-subscribe
  with `since`), and records everything it saw for the checks.
- `ApiPublisher`: publishes at a steady rate through the HTTP API of a list
  of nodes and records which publications were acknowledged.

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
import random
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

import requests
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

# The wire formats (no sockets) live in sbwire and are tested on their own (test_sbwire.py);
# re-exported here so that `from sbclient import ws_frame, OP_TEXT, ...` keeps working.
from sbwire import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, ChunkDecoder,  # noqa: F401
                    SSEEvent, SSEParser, close_code, parse_frame, text_objects, wait_until, ws_frame)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LISTEN_RE = re.compile(r"ws://(\[[^\]]+\]|[^\s/:]+):(\d+)/ws")

DEFAULT_TIMEOUT = 5.0
TOKEN_SECRET = "s3cret-e2e-0123456789abcdef-0123456789"  # --token-secret of the token_node fixture (>= 32 bytes)

# With a token key configured, a node denies by default; the tests written before permissions
# existed run their token nodes with every namespace flag on (tests/e2e/test_auth.py tests the flags).
OPEN_PERMISSIONS_YAML = """\
defaults:
  allowSubscribeForClient: true
  allowSubscribeForAnonymous: true
  allowPublishForClient: true
  allowPublishForAnonymous: true
  allowHistoryForClient: true
  allowHistoryForAnonymous: true
  allowPresenceForClient: true
  allowPresenceForAnonymous: true
"""


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
        # Optional hooks, called synchronously in arrival order (before `call`
        # returns): `on_push(push)` for every push, and a per-command
        # `on_reply` given to `call`. Exceptions they raise land in hook_errors.
        self.on_push: Callable[[dict], None] | None = None
        self._reply_hooks: dict[int, Callable[[dict], None]] = {}
        self.hook_errors: list[str] = []
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

    def _run_hook(self, hook: Callable[[dict], None], obj: dict) -> None:
        try:
            hook(obj)
        except Exception as e:
            self.hook_errors.append(f"{type(e).__name__}: {e} (on {str(obj)[:200]})")

    async def _dispatch(self, obj: dict) -> None:
        if "id" in obj:
            hook = self._reply_hooks.pop(obj["id"], None)
            if hook is not None:
                self._run_hook(hook, obj)
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
            if self.on_push is not None:
                self._run_hook(self.on_push, obj)
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

    async def wait_sentinel(self, channel: str, data: Any = "sentinel", timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
        """Wait until the last publication in `channel` is the sentinel (published after everything
        the test checks): anything that was going to arrive before it, a late duplicate included, has.
        Returns the publications before the sentinel."""
        await self.wait_until(lambda: bool(self.pubs(channel)) and self.pubs(channel)[-1].get("data") == data, timeout,
                              f"the sentinel {data!r} in {channel!r}")
        return self.pubs(channel)[:-1]

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"connection not closed by the server within {timeout}s")
        return self.close_code

    # -- commands -------------------------------------------------------------

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send(text)

    async def call(self, method: str, params: Any = None, timeout: float = DEFAULT_TIMEOUT,
                   on_reply: Callable[[dict], None] | None = None) -> dict:
        """Send one command, return the whole reply (`result` or `error`).

        `on_reply(reply)` runs in the reader, before any later push is handled."""
        cid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        if self.closed.is_set():
            self._pending.pop(cid, None)
            raise ClosedBeforeReply(self.close_code, self.close_reason)
        if on_reply is not None:
            self._reply_hooks[cid] = on_reply
        try:
            await self.ws.send(json.dumps({"id": cid, method: params if params is not None else {}}))
        except ConnectionClosed:
            pass  # the reader resolves the future with ClosedBeforeReply
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self._pending.pop(cid, None)
            self._reply_hooks.pop(cid, None)
            raise AssertionError(f"no reply to {method} {params!r} within {timeout}s")
        except ClosedBeforeReply:
            self._reply_hooks.pop(cid, None)
            raise
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
        except asyncio.CancelledError:
            if _being_cancelled():
                if self in _OPEN_CLIENTS:
                    _OPEN_CLIENTS.remove(self)
                raise  # the caller itself is cancelled: do not swallow that
        except BaseException:
            pass
        if self in _OPEN_CLIENTS:
            _OPEN_CLIENTS.remove(self)


def _being_cancelled() -> bool:
    """True when the current task has a cancellation request pending."""
    task = asyncio.current_task()
    return task is not None and getattr(task, "cancelling", lambda: 0)() > 0


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


# Background workers (ResilientSubscriber, ApiPublisher) started and not yet stopped.
_BACKGROUND: list[Any] = []


async def stop_background() -> None:
    for w in list(_BACKGROUND):
        try:
            await w.stop()
        except Exception:
            pass


def run(coro: Any, timeout: float = 60.0) -> Any:
    """Run one async test body with an overall deadline; stops its background
    workers and closes its clients."""

    async def main() -> Any:
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            await stop_background()
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

    def _more(self, deadline: float) -> None:
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

    def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[bool, int, bytes]:
        """The next frame (fin, opcode, payload), read within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            got = parse_frame(self.buf)
            if got is not None:
                frame, used = got
                self.buf = self.buf[used:]
                return frame
            self._more(deadline)

    def recv_json(self, timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
        """The JSON objects of the next text frame (skips server pings)."""
        deadline = time.monotonic() + timeout
        while True:
            fin, op, payload = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if op == OP_CLOSE:
                raise AssertionError(f"unexpected close {close_code(payload)} {payload[2:]!r}")
            if op != OP_TEXT:
                continue
            objs = text_objects(payload)
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
                return "close", close_code(payload), frames
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


# --------------------------------------------------------------------------
# Redis (for the Redis broker): one redis-server process on loopback
# --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    return os.environ.get("REDIS_SERVER_BIN", "redis-server")


def resp_ping(port: int, timeout: float = 0.5) -> bool:
    """True when a RESP `PING` on 127.0.0.1:port is answered `+PONG`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            buf = b""
            deadline = time.monotonic() + timeout
            while b"\r\n" not in buf and len(buf) < 1024 and time.monotonic() < deadline:
                chunk = s.recv(256)
                if not chunk:
                    break
                buf += chunk
            return buf.startswith(b"+PONG\r\n")
    except OSError:
        return False


class RedisStartError(RuntimeError):
    pass


class RedisServer:
    """`redis-server` without persistence on 127.0.0.1:`port`, in the foreground.

    `kill()` is SIGKILL (all data lost: nothing is saved), `restart()` starts
    a fresh, empty server on the same port, `stop()` is SIGTERM then SIGKILL.
    Every process it starts is stopped by its PID."""

    def __init__(self, port: int, log_path: str, workdir: str):
        self.port = port
        self.log_path = log_path
        self.workdir = workdir
        self.process: subprocess.Popen | None = None
        self.pids: list[int] = []     # every redis-server process started, in order
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        assert not self.alive(), "redis-server is already running"
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", self.workdir, "--logfile", ""]
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            cwd=self.workdir)
        self.pids.append(self.process.pid)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStartError(f"redis-server exited with {self.process.returncode} on port "
                                      f"{self.port}:\n{self.log_tail()}")
            if resp_ping(self.port, 0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"redis-server on port {self.port} did not answer PING within {timeout}s:\n"
                              f"{self.log_tail()}")

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """Start again on the same port (after kill/stop)."""
        if self.alive():
            raise AssertionError("restart: redis-server still running")
        self.start(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""


# --------------------------------------------------------------------------
# A client that keeps its subscriptions through node and broker failures
# --------------------------------------------------------------------------


async def connect_url(url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                      on_push: Callable[[dict], None] | None = None) -> Client:
    """Open a WebSocket to `url` and do the `connect` handshake (asserts success)."""
    ws = await open_ws(url, open_timeout=timeout)
    c = Client(ws)
    c.on_push = on_push
    try:
        c.info = await c.result("connect", {"token": token} if token is not None else {}, timeout)
    except BaseException:
        await c.close()
        raise
    c.id = c.info.get("client")
    assert isinstance(c.id, str) and c.id, f"connect result without client id: {c.info}"
    return c


def start_redis(log_path: str, workdir: str, registry: list, attempts: int = 5) -> RedisServer:
    """Starts a `RedisServer` on a free port, retrying on another port when the one
    probed free was taken before redis-server bound it. The server is put in
    `registry` (the caller's safety net) from its first start on; raises
    RedisStartError after `attempts` failures."""
    errors = []
    for _ in range(attempts):
        candidate = RedisServer(free_port(), log_path, workdir)
        registry.append(candidate)
        try:
            candidate.start()
        except RedisStartError as e:
            errors.append(str(e))
            candidate.stop()
            registry.remove(candidate)
            continue
        return candidate
    raise RedisStartError("could not start redis-server:\n" + "\n".join(errors[-2:]))


def is_told(ev: dict) -> bool:
    """An event that tells a subscriber its stream may have a hole: an
    `unsubscribe` push with code 2500, a subscribe result with
    `recovered: false`, or a close with code 3005."""
    k = ev["kind"]
    return ((k == "unsub" and ev.get("code") == 2500)
            or (k == "sub" and ev.get("recovered") is False)
            or (k == "close" and ev.get("code") == 3005))


class ResilientSubscriber:
    """A protocol client that keeps its channels through failures, as a real
    client app would, and records everything for the checks.

    - Holds `position[channel] = (offset, epoch)`: the subscribe result's
      position, then each publication's offset (with the epoch of the last
      subscribe result, or the pub's own `epoch` when the server sends one).
    - `unsubscribe` push with a code in 2500..2999: re-subscribes with `since`
      (same connection). Other codes (2000: server API): stays unsubscribed.
    - On close (any reason but a 3500..4999 code, which forbids reconnecting):
      reconnects to the next URL of `urls` (round robin) after a small
      backoff, then subscribes every channel again with `since`.
    - A subscribe error (e.g. 100, temporary, while the broker is down) is
      retried on the same connection with backoff; a subscribe that gets no
      reply closes the connection (which then reconnects).

    Everything is bounded: `max_connects` connection attempts,
    `max_sub_attempts` subscribe attempts per channel per connection.

    Records per channel, in arrival order, `events[channel]`: dicts with
    `kind` in
      'pub'       offset, epoch, data, source ('live' | 'recovered'), conn, t
      'sub'       since, recovered (None without since), offset, epoch,
                  recovered_offsets, conn, t      (after its recovered pubs)
      'sub_error' code, message, temporary, conn, t
      'unsub'     code, reason, conn, t
      'close'     code, reason, conn, t          (the connection ended)
    `is_told(ev)` says which of them tell the client it may have missed
    something. `log` holds connection-level events; `problems` things that
    must never happen (a pub for a channel the client is not subscribed to,
    hook errors, a subscribe that never succeeded, ...)."""

    def __init__(self, urls: list[str], channels: list[str], name: str = "sub", token: str | None = None,
                 backoff: tuple[float, float] = (0.05, 0.5), max_connects: int = 80,
                 max_sub_attempts: int = 60, op_timeout: float = 4.0, lifetime: float = 150.0):
        assert urls and channels
        self.urls = list(urls)
        self.channels = list(channels)
        self.name = name
        self.token = token
        self.backoff = backoff
        self.max_connects = max_connects
        self.max_sub_attempts = max_sub_attempts
        self.op_timeout = op_timeout
        self.lifetime = lifetime  # the run loop ends by itself after this many seconds
        self.position: dict[str, tuple[int, str] | None] = {ch: None for ch in channels}
        self.events: dict[str, list[dict]] = {ch: [] for ch in channels}
        self.subscribed: dict[str, bool] = {ch: False for ch in channels}
        self.log: list[dict] = []
        self.problems: list[str] = []
        self.connections: list[dict] = []   # {url, node, client, t} per successful connect
        self.client: Client | None = None
        self.conn = 0
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._side_tasks: set[asyncio.Task] = set()
        self._next_url = 0

    # -- state ----------------------------------------------------------------

    def _notify(self) -> None:
        ev = self._changed
        self._changed = asyncio.Event()
        ev.set()

    def _event(self, ch: str, kind: str, **fields: Any) -> dict:
        ev = {"kind": kind, "conn": self.conn, "t": time.monotonic(), **fields}
        self.events[ch].append(ev)
        self._notify()
        return ev

    def received(self, ch: str) -> list[tuple[int, str]]:
        """(offset, epoch) of every publication seen, in arrival order."""
        return [(e["offset"], e["epoch"]) for e in self.events[ch] if e["kind"] == "pub"]

    def pubs(self, ch: str) -> list[dict]:
        return [e for e in self.events[ch] if e["kind"] == "pub"]

    def told(self, ch: str) -> list[dict]:
        return [e for e in self.events[ch] if is_told(e)]

    def describe(self, ch: str, last: int = 12) -> str:
        interesting = [e for e in self.events[ch] if e["kind"] != "pub"]
        rec = self.received(ch)
        return (f"{self.name}: {len(rec)} pubs (first {rec[:3]}, last {rec[-3:]}), position {self.position[ch]}, "
                f"connections {[(c['url'].rsplit(':', 1)[-1], c['node']) for c in self.connections]}, "
                f"non-pub events {[{k: v for k, v in e.items() if k not in ('t',)} for e in interesting[-last:]]}, "
                f"problems {self.problems[:5]}, log tail {self.log[-5:]}")

    # -- lifecycle ------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> "ResilientSubscriber":
        """Connect and subscribe every channel (asserts it happens within `timeout`)."""
        self._task = asyncio.create_task(self._run())
        _BACKGROUND.append(self)
        await self.wait_for(lambda: all(self.subscribed.values()), timeout, "first subscribe of every channel")
        return self

    async def stop(self) -> None:
        """Stop reconnecting and close the connection. Safe to call twice."""
        self._stop.set()
        self._notify()
        if self in _BACKGROUND:
            _BACKGROUND.remove(self)
        tasks = list(self._side_tasks) + ([self._task] if self._task is not None else [])
        for t in self._side_tasks:
            t.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=5)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        if self.client is not None:
            await self.client.close()

    async def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if self._task is not None and self._task.done() and not self._stop.is_set():
                exc = "cancelled" if self._task.cancelled() else self._task.exception()
                raise AssertionError(f"{self.name}: run loop ended ({exc!r}) while waiting for {what}; "
                                     f"{self.describe(self.channels[0])}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: timed out after {timeout}s waiting for {what}; "
                                     f"{self.describe(self.channels[0])}")
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    async def wait_position(self, ch: str, offset: int, epoch: str | None = None, timeout: float = 10.0) -> None:
        """Until the last publication seen in `ch` is at `offset` or later (in `epoch` when given)."""
        def ok() -> bool:
            pos = self.position[ch]
            return pos is not None and pos[0] >= offset and (epoch is None or pos[1] == epoch)
        await self.wait_for(ok, timeout, f"position >= {offset} (epoch {epoch}) in {ch!r}")

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _jitter(self, delay: float) -> float:
        return delay * (0.5 + random.random() / 2)

    # -- the connection loop --------------------------------------------------

    async def _run(self) -> None:
        delay = self.backoff[0]
        deadline = time.monotonic() + self.lifetime
        for _ in range(self.max_connects):
            if self._stop.is_set():
                return
            if time.monotonic() > deadline:
                self.problems.append(f"run loop ended after its lifetime of {self.lifetime}s")
                return
            url = self.urls[self._next_url % len(self.urls)]
            self._next_url += 1
            conn = self.conn + 1
            try:
                client = await connect_url(url, self.token, self.op_timeout,
                                           on_push=lambda p, conn=conn: self._on_push(conn, p))
            except Exception as e:
                self.log.append({"event": "connect_failed", "url": url, "error": repr(e)[:200],
                                 "t": time.monotonic()})
                await self._sleep(self._jitter(delay))
                delay = min(delay * 2, self.backoff[1])
                continue
            self.conn = conn
            self.client = client
            t_connected = time.monotonic()
            self.connections.append({"url": url, "node": client.info.get("node"), "client": client.id,
                                     "t": t_connected})
            self.log.append({"event": "connected", "url": url, "node": client.info.get("node"),
                             "t": t_connected})
            for ch in self.channels:
                if not await self._subscribe(client, conn, ch):
                    break
            stop_wait = asyncio.create_task(self._stop.wait())
            closed_wait = asyncio.create_task(client.closed.wait())
            try:
                await asyncio.wait({stop_wait, closed_wait}, return_when=asyncio.FIRST_COMPLETED,
                                   timeout=max(0.0, deadline - time.monotonic()))
            finally:
                stop_wait.cancel()
                closed_wait.cancel()
            if self._stop.is_set() and not client.closed.is_set():
                return  # stop() closes the client
            if not client.closed.is_set():
                self.problems.append(f"run loop ended after its lifetime of {self.lifetime}s")
                await client.close()
                return
            code, reason = client.close_code, client.close_reason
            for ch in self.channels:
                self.subscribed[ch] = False
                self._event(ch, "close", code=code, reason=reason)
            self.log.append({"event": "closed", "url": url, "code": code, "reason": reason,
                             "t": time.monotonic()})
            self.problems.extend(f"conn {conn}: {e}" for e in client.hook_errors)
            await client.close()
            if code is not None and 3500 <= code <= 4999:
                self.problems.append(f"closed with {code} ({reason!r}): no reconnect")
                return
            if time.monotonic() - t_connected > 1.0:
                delay = self.backoff[0]
            await self._sleep(self._jitter(delay))
            delay = min(delay * 2, self.backoff[1])
        if not self._stop.is_set():
            self.problems.append(f"gave up after {self.max_connects} connection attempts")

    async def _subscribe(self, client: Client, conn: int, ch: str) -> bool:
        """Subscribe `ch` on `client` with `since` = the current position.
        False when the connection is gone (the run loop reconnects)."""
        delay = self.backoff[0]
        for _ in range(self.max_sub_attempts):
            if client.closed.is_set() or self._stop.is_set():
                return False
            since = self.position[ch]
            params: dict = {"channel": ch}
            if since is not None:
                params["since"] = {"offset": since[0], "epoch": since[1]}
            try:
                reply = await client.call("subscribe", params, self.op_timeout,
                                          on_reply=lambda r, since=since: self._on_sub_reply(conn, ch, since, r))
            except ClosedBeforeReply:
                return False
            except AssertionError as e:  # no reply in time: drop the connection, reconnect
                self._event(ch, "sub_error", code=None, message=str(e)[:200], temporary=True)
                await client.close()
                return False
            if "result" in reply:
                return True
            err = reply.get("error", {})
            if err.get("code") == 105:
                self.problems.append(f"conn {conn}: subscribe {ch!r} -> 105 already subscribed")
                return True
            await self._sleep(self._jitter(delay))
            delay = min(delay * 2, self.backoff[1])
        self.problems.append(f"conn {conn}: subscribe {ch!r} failed {self.max_sub_attempts} times")
        await client.close()
        return False

    # -- hooks, called by the client's reader in arrival order ----------------

    def _on_sub_reply(self, conn: int, ch: str, since: tuple[int, str] | None, reply: dict) -> None:
        if "error" in reply:
            err = reply["error"]
            self._event(ch, "sub_error", code=err.get("code"), message=err.get("message"),
                        temporary=err.get("temporary"))
            return
        r = reply.get("result", {})
        epoch = r.get("epoch")
        recovered = r.get("recovered") if since is not None else None
        rec_offsets = []
        if recovered:
            for pub in r.get("publications") or []:
                self._record_pub(conn, ch, pub, epoch, "recovered")
                rec_offsets.append(pub.get("offset"))
        self.subscribed[ch] = True
        self.position[ch] = (r.get("offset"), epoch)
        self._event(ch, "sub", since=since, recovered=recovered, offset=r.get("offset"), epoch=epoch,
                    recovered_offsets=rec_offsets)

    def _record_pub(self, conn: int, ch: str, pub: dict, default_epoch: str | None, source: str) -> None:
        off = pub.get("offset")
        epoch = pub.get("epoch", default_epoch)
        self._event(ch, "pub", offset=off, epoch=epoch, data=pub.get("data"), source=source)
        self.position[ch] = (off, epoch)

    def _on_push(self, conn: int, push: dict) -> None:
        ch = push.get("channel")
        if "pub" in push:
            if ch not in self.events:
                self.problems.append(f"conn {conn}: pub for unknown channel {ch!r}")
                return
            if not self.subscribed[ch]:
                self.problems.append(f"conn {conn}: pub in {ch!r} while not subscribed: {push}")
            pos = self.position[ch]
            self._record_pub(conn, ch, push["pub"], pos[1] if pos else None, "live")
        elif "unsubscribe" in push and ch in self.events:
            u = push["unsubscribe"]
            code = u.get("code")
            self.subscribed[ch] = False
            self._event(ch, "unsub", code=code, reason=u.get("reason"))
            if isinstance(code, int) and 2500 <= code <= 2999 and not self._stop.is_set():
                client = self.client
                if client is not None:
                    t = asyncio.get_running_loop().create_task(self._resubscribe(client, conn, ch))
                    self._side_tasks.add(t)
                    t.add_done_callback(self._side_tasks.discard)
        elif "disconnect" in push:
            self.log.append({"event": "disconnect_push", **push["disconnect"], "t": time.monotonic()})

    async def _resubscribe(self, client: Client, conn: int, ch: str) -> None:
        await self._sleep(random.random() * 0.05)
        if client is self.client and not client.closed.is_set():
            await self._subscribe(client, conn, ch)


def stream_problems(sub: ResilientSubscriber, ch: str) -> list[str]:
    """What the subscriber's own stream shows wrong, whatever happened around it:

    - every publication is the one right after the previous position, in the
      same epoch (the position being the last publication, or the position a
      subscribe result gave). So no gap, duplicate, reorder or silent epoch
      change, live or recovered, and no gap at a recovery seam;
    - a subscribe with `recovered: true` continued exactly from its `since`
      (its publications start at since+1, and its result's offset/epoch is
      where they end);
    - no entry in `sub.problems`."""
    out = list(f"{sub.name}: {p}" for p in sub.problems)
    base: tuple[int, str] | None = None
    for i, e in enumerate(sub.events[ch]):
        if e["kind"] == "pub":
            if base is None:
                out.append(f"{sub.name} #{i}: pub {e['offset']} before any subscribe result")
            elif e["epoch"] != base[1]:
                out.append(f"{sub.name} #{i}: pub ({e['offset']}, {e['epoch']}) in another epoch than the "
                           f"position {base}, without a subscribe result in between")
            elif e["offset"] != base[0] + 1:
                out.append(f"{sub.name} #{i}: pub offset {e['offset']} after position {base} "
                           f"({e['source']}): {'duplicate/reorder' if e['offset'] <= base[0] else 'gap'}")
            base = (e["offset"], e["epoch"])
        elif e["kind"] == "sub":
            if e["recovered"] is True:
                since = tuple(e["since"])
                if since[1] != e["epoch"]:
                    out.append(f"{sub.name} #{i}: recovered true but epoch {e['epoch']} != since {since}")
                exp = list(range(since[0] + 1, since[0] + 1 + len(e["recovered_offsets"])))
                if e["recovered_offsets"] != exp:
                    out.append(f"{sub.name} #{i}: recovered publications {e['recovered_offsets'][:10]} "
                               f"do not continue from since {since}")
                if base != (e["offset"], e["epoch"]):
                    out.append(f"{sub.name} #{i}: recovered true: result position ({e['offset']}, "
                               f"{e['epoch']}) != last recovered {base}")
            base = (e["offset"], e["epoch"])
    return out


# --------------------------------------------------------------------------
# Steady publishing through the HTTP API
# --------------------------------------------------------------------------


class ApiPublisher:
    """Publishes `{"seq": i, "node": name}` to `channel` at most `rate` per
    second, one request at a time, round robin over `targets` (a list the
    test may change, e.g. drop a node before killing it), until `count`
    attempts or `max_seconds`.

    `acked`: {seq, offset, epoch, node, data, t} for every publication the API
    acknowledged with a result; `failed`: {seq, node, kind, detail, t} for the
    others (kind 'error' with the error object, 'http' for a non-200 status,
    'exception' for a timeout / connection error)."""

    def __init__(self, targets: list[Node], channel: str, rate: float = 50.0, count: int = 300,
                 max_seconds: float = 30.0, request_timeout: float = 5.0):
        self.targets = targets
        self.channel = channel
        self.interval = 1.0 / rate
        self.count = count
        self.max_seconds = max_seconds
        self.request_timeout = request_timeout
        self.acked: list[dict] = []
        self.failed: list[dict] = []
        self.attempts = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> "ApiPublisher":
        self._task = asyncio.create_task(self._run())
        _BACKGROUND.append(self)
        return self

    async def stop(self) -> None:
        """Stop after the request in flight (bounded by its timeout)."""
        self._stop.set()
        if self in _BACKGROUND:
            _BACKGROUND.remove(self)
        if self._task is not None and not self._task.done():
            done, _ = await asyncio.wait([self._task], timeout=self.request_timeout + 2)
            if not done:
                self._task.cancel()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait(self, timeout: float) -> None:
        """Until the run is over (count or max_seconds)."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
        if self in _BACKGROUND:
            _BACKGROUND.remove(self)

    async def wait_acked(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n:
            assert self.running, f"publisher ended with {len(self.acked)} acked; failures {self.failed[-3:]}"
            assert time.monotonic() < deadline, (f"publisher: {len(self.acked)} acked after {timeout}s "
                                                 f"(want {n}); failures {self.failed[-3:]}")
            await asyncio.sleep(0.02)

    async def publish_once(self, node: Node, data: Any) -> dict:
        """One publish: {'result': ...} or {'error': ..., 'kind': ...}."""
        body = {"channel": self.channel, "data": data}
        try:
            r = await asyncio.to_thread(node.api, "publish", body, "default", self.request_timeout)
        except requests.RequestException as e:
            return {"kind": "exception", "error": repr(e)[:300]}
        if r.status_code != 200:
            return {"kind": "http", "error": f"HTTP {r.status_code} {r.text[:300]}"}
        try:
            doc = r.json()
        except ValueError:
            return {"kind": "http", "error": f"not JSON: {r.text[:300]}"}
        if "result" in doc:
            return {"result": doc["result"]}
        return {"kind": "error", "error": doc.get("error")}

    async def _run(self) -> None:
        t0 = time.monotonic()
        for seq in range(self.count):
            if self._stop.is_set() or time.monotonic() - t0 > self.max_seconds:
                return
            started = time.monotonic()
            node = self.targets[seq % len(self.targets)]
            name = getattr(node, "name", str(node.port))
            data = {"seq": seq, "node": name}
            self.attempts += 1
            out = await self.publish_once(node, data)
            now = time.monotonic()
            if "result" in out:
                res = out["result"]
                self.acked.append({"seq": seq, "offset": res.get("offset"), "epoch": res.get("epoch"),
                                   "node": name, "data": data, "t": now})
            else:
                self.failed.append({"seq": seq, "node": name, "kind": out["kind"], "detail": out["error"],
                                    "t": now})
            wait = started + self.interval - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), wait)
                except asyncio.TimeoutError:
                    pass


# --------------------------------------------------------------------------
# SSE and long-polling (docs/transports.md), with plain sockets / requests
# --------------------------------------------------------------------------


def b64url_decode(s: str) -> bytes:
    """base64url without padding -> bytes (raises ValueError on bad input)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", s):
        raise ValueError(f"not base64url (no padding): {s!r}")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url_encode_json(obj: Any) -> str:
    return _b64url(json.dumps(obj, separators=(",", ":")).encode())


def decode_event_id(event_id: str) -> dict:
    """An SSE event id -> the positions object it encodes ({channel: {offset, epoch}})."""
    doc = json.loads(b64url_decode(event_id).decode("utf-8"))
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise ValueError(f"event id {event_id!r} decodes to {doc!r}, not {{channel: position}}")
    return doc


_OPEN_SSE: list["SSEStream"] = []


class SSEStream:
    """`GET /sse?connect=...` on a plain socket. A reader thread undoes the
    chunked encoding and parses the event stream (`data:`/`id:` lines, a
    blank line ends an event); every event lands in `events`, in order.

    Status and headers are read in the constructor. A non-200 answer is read
    whole into `body` (bounded) and the stream is over. `pause()` stops
    reading (the kernel buffers fill up: a slow consumer), `resume()` reads
    again. Every wait has a deadline."""

    def __init__(self, node: Any, connect: Any = None, last_event_id: str | None = None,
                 headers: dict[str, str] | None = None, rcvbuf: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT, path: str = "/sse"):
        self.node = node
        self.host, self.port = node.host, node.port
        if connect is not None:
            text = connect if isinstance(connect, str) else json.dumps(connect)
            path += "?connect=" + urllib.parse.quote(text, safe="")
        self.path = path
        self.events: list[SSEEvent] = []
        self.cond = threading.Condition()
        self.eof = False              # the server ended the connection (FIN / reset)
        self.ended_at: float | None = None
        self.errors: list[str] = []   # framing trouble seen by the reader
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._buf = b""
        self._parser = SSEParser(self._event)   # sbwire: the event stream format
        self._chunks: ChunkDecoder | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((self.host, self.port))
        _OPEN_SSE.append(self)
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: text/event-stream",
                 "Cache-Control: no-cache"]
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        deadline = time.monotonic() + timeout
        raw = b""
        while b"\r\n\r\n" not in raw:
            if len(raw) > 65536:
                raise AssertionError(f"SSE: response head too long: {raw[:200]!r}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"SSE {path}: no response head within {timeout}s: {raw[:200]!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise AssertionError(f"SSE {path}: EOF before the response head: {raw[:200]!r}")
            raw += chunk
        head, rest = raw.split(b"\r\n\r\n", 1)
        hl = head.decode("latin-1").split("\r\n")
        parts = hl[0].split(" ", 2)
        self.status_line = hl[0]
        self.status = int(parts[1])
        self.headers = {}
        for line in hl[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.body = b""
        if self.status != 200:
            self._read_whole_body(rest, deadline=time.monotonic() + timeout)
            self.close()
            return
        self._thread = threading.Thread(target=self._read_loop, args=(rest,), daemon=True)
        self._thread.start()

    # -- non-200 answers -------------------------------------------------------

    def _read_whole_body(self, rest: bytes, deadline: float) -> None:
        out = bytearray()
        self._buf = rest
        clen = self.headers.get("content-length")
        sink = out.extend
        self._chunks = ChunkDecoder(sink)
        self._chunks.errors = self.errors

        def more() -> bool:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                c = self.sock.recv(65536)
            except (socket.timeout, OSError):
                return False
            if not c:
                return False
            self._buf += c
            return True

        if self.chunked:
            while not self.terminated and len(out) < 1 << 20:
                n_before = len(out)
                self._dechunk(sink)
                if self.terminated:
                    break
                if len(out) == n_before and not more():
                    break
        elif clen is not None:
            n = int(clen)
            while len(self._buf) < n and more():
                pass
            out.extend(self._buf[:n])
        else:
            while len(self._buf) < 1 << 20 and more():
                pass
            out.extend(self._buf)
        self.body = bytes(out)

    def json_body(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    # -- the reader --------------------------------------------------------------

    # The chunked body's last chunk (0) came.
    @property
    def terminated(self) -> bool:
        return self._chunks is not None and self._chunks.terminated

    @property
    def comments(self) -> int:
        return self._parser.comments

    @property
    def raw_bytes(self) -> int:
        return self._parser.raw_bytes

    def _dechunk(self, sink: Callable[[bytes], None]) -> None:
        """Pass what `_buf` holds through the chunk decoder (made for `sink`)."""
        data, self._buf = self._buf, b""
        assert self._chunks is not None and self._chunks.sink is sink
        self._chunks.feed(data)

    def _event(self, ev: SSEEvent) -> None:
        with self.cond:
            self.events.append(ev)
            self.cond.notify_all()

    def _read_loop(self, rest: bytes) -> None:
        sink = self._parser.feed
        self._chunks = ChunkDecoder(sink)
        self._chunks.errors = self.errors
        try:
            self._buf = rest
            if self.chunked:
                self._dechunk(sink)
            else:
                data, self._buf = self._buf, b""
                if data:
                    sink(data)
            self.sock.settimeout(0.2)
            while not self._stop.is_set() and not self.terminated:
                if self._paused.is_set():
                    time.sleep(0.05)
                    continue
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self.eof = True
                    break
                if self.chunked:
                    self._buf += chunk
                    self._dechunk(sink)
                else:
                    sink(chunk)
        except Exception as e:  # pragma: no cover - surfaced in errors
            self.errors.append(f"reader: {e!r}")
        finally:
            if self.eof or self.terminated:
                self.ended_at = time.monotonic()
            with self.cond:
                self.cond.notify_all()

    # -- waiting -----------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.eof or self.terminated

    def wait_until(self, pred: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT,
                   what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"SSE: timed out after {timeout}s waiting for {what}; ended={self.ended}; "
                        f"last events: {[e.data for e in self.events[-5:]]}; errors {self.errors[:3]}")
                self.cond.wait(min(remaining, 0.2))

    def wait_event(self, pred: Callable[[SSEEvent], bool], timeout: float = DEFAULT_TIMEOUT,
                   what: str = "event", start: int = 0) -> tuple[int, SSEEvent]:
        found: list[tuple[int, SSEEvent]] = []

        def check() -> bool:
            for i in range(start, len(self.events)):
                if pred(self.events[i]):
                    found.append((i, self.events[i]))
                    return True
            return False

        self.wait_until(check, timeout, what)
        return found[0]

    def wait_obj(self, pred: Callable[[Any], bool], timeout: float = DEFAULT_TIMEOUT, what: str = "event",
                 start: int = 0) -> Any:
        return self.wait_event(lambda e: isinstance(e.obj, dict) and pred(e.obj), timeout, what, start)[1].obj

    def wait_reply(self, cid: int, timeout: float = DEFAULT_TIMEOUT) -> dict:
        return self.wait_obj(lambda o: o.get("id") == cid, timeout, f"reply id {cid}")

    def wait_connected(self, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """The first event (the connect reply); sets `info`, `client`, `session`."""
        self.wait_until(lambda: len(self.events) >= 1 or self.ended, timeout, "the connect reply event")
        assert self.events, f"SSE stream ended before any event (errors {self.errors})"
        first = self.events[0].obj
        self.first = first
        assert isinstance(first, dict) and first.get("id") == 1 and "result" in first, (
            f"first SSE event is not the connect reply with id 1: {self.events[0].data!r}")
        self.info = first["result"]
        self.client = self.info.get("client")
        self.session = self.info.get("session")
        return self.info

    def objs(self) -> list[Any]:
        with self.cond:
            return [e.obj for e in self.events]

    def pub_events(self, channel: str) -> list[SSEEvent]:
        with self.cond:
            return [e for e in self.events
                    if isinstance(e.obj, dict) and e.obj.get("channel") == channel and "pub" in e.obj]

    def pubs(self, channel: str) -> list[dict]:
        return [e.obj["pub"] for e in self.pub_events(channel)]

    def wait_pubs(self, channel: str, n: int, timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
        self.wait_until(lambda: len(self.pubs(channel)) >= n, timeout,
                        f"{n} pubs in {channel!r} (have {len(self.pubs(channel))})")
        return self.pubs(channel)

    def wait_end(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wait_until(lambda: self.ended, timeout, "the end of the stream")

    @property
    def last_id(self) -> str | None:
        with self.cond:
            for e in reversed(self.events):
                if e.id is not None:
                    return e.id
        return None

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    # -- commands --------------------------------------------------------------

    def post(self, commands: Any, node: Any = None, timeout: float = DEFAULT_TIMEOUT + 5,
             session: str | None = None) -> requests.Response:
        return sse_post(node or self.node, session if session is not None else self.session, commands,
                        timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        t = getattr(self, "_thread", None)
        if t is not None and t is not threading.current_thread():
            t.join(2)
        if self in _OPEN_SSE:
            _OPEN_SSE.remove(self)


def close_all_sse() -> None:
    for s in list(_OPEN_SSE):
        s.close()


def commands_body(commands: Any) -> bytes:
    """A list of command dicts -> one JSON object per line; str/bytes as they are."""
    if isinstance(commands, bytes):
        return commands
    if isinstance(commands, str):
        return commands.encode("utf-8")
    if isinstance(commands, dict):
        commands = [commands]
    return "\n".join(json.dumps(c) for c in commands).encode("utf-8")


def sse_post(node: Any, session: str | None, commands: Any, timeout: float = DEFAULT_TIMEOUT + 5,
             content_type: str = "text/plain", query: str | None = None) -> requests.Response:
    """`POST /sse?session=...` (no `session` parameter when it is None)."""
    path = "/sse"
    if query is not None:
        path += "?" + query
    elif session is not None:
        path += "?session=" + urllib.parse.quote(session, safe="")
    return node.http("POST", path, timeout=timeout, data=commands_body(commands),
                     headers={"Content-Type": content_type})


def lp_poll(node: Any, body: Any, token: str | None = None, timeout: float | None = None,
            raw: bytes | None = None) -> requests.Response:
    """`POST /poll`; the HTTP timeout is the poll's own timeout + 10 s."""
    headers = {"Content-Type": "text/plain"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if timeout is None:
        t = body.get("timeout", 25) if isinstance(body, dict) else 25
        timeout = (t if isinstance(t, (int, float)) else 25) + 10
    data = raw if raw is not None else json.dumps(body).encode("utf-8")
    return node.http("POST", "/poll", timeout=timeout, data=data, headers=headers)


def lp_rpc(node: Any, commands: Any, token: str | None = None,
           timeout: float = DEFAULT_TIMEOUT + 5) -> requests.Response:
    headers = {"Content-Type": "text/plain"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return node.http("POST", "/rpc", timeout=timeout, data=commands_body(commands), headers=headers)
