"""SSE and long-polling (docs/transports.md) for the e2e tests: `SSEStream`
(a plain socket, chunked body and event stream parsed by sbwire), POSTed
commands, polls and rpc through `requests`; event ids decoded."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import urllib.parse
from typing import Any, Callable

import requests

from sbjwt import _b64url
from sbproc import DEFAULT_TIMEOUT
from sbwire import ChunkDecoder, SSEEvent, SSEParser

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
    """`GET /sse?connect=...` (or, with `post=True`, `POST /sse` with the
    connect params as the JSON body: the only way a token may travel) on a
    plain socket. A reader thread undoes the
    chunked encoding and parses the event stream (`data:`/`id:` lines, a
    blank line ends an event); every event lands in `events`, in order.

    Status and headers are read in the constructor. A non-200 answer is read
    whole into `body` (bounded) and the stream is over. `pause()` stops
    reading (the kernel buffers fill up: a slow consumer), `resume()` reads
    again. Every wait has a deadline."""

    def __init__(self, node: Any, connect: Any = None, last_event_id: str | None = None,
                 headers: dict[str, str] | None = None, rcvbuf: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT, path: str = "/sse", post: bool = False):
        self.node = node
        self.host, self.port = node.host, node.port
        body = b""
        if connect is not None:
            text = connect if isinstance(connect, str) else json.dumps(connect)
            if post:
                body = text.encode("utf-8")
            else:
                path += "?connect=" + urllib.parse.quote(text, safe="")
        self.method = "POST" if post else "GET"
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
        lines = [f"{self.method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: text/event-stream",
                 "Cache-Control: no-cache"]
        if post:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)
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
