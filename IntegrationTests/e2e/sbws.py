"""WebSocket clients for the e2e tests: `Client` (protocol v1 on top of
`websockets`, a reader task per client), `RawWS` (frames by hand on a plain
socket, for frame-level tests and for a consumer that stops reading),
`SteadyTraffic`, and `run` (one event loop per test, every client and
background worker closed at its end). Every wait has a deadline."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import socket
import time
from typing import Any, Callable

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from sbproc import DEFAULT_TIMEOUT, Node
from sbwire import OP_CLOSE, OP_TEXT, close_code, parse_frame, text_objects, ws_frame

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
