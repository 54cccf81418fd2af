"""Clients that live through failures, for the cluster tests:
`ResilientSubscriber` (reconnects, re-subscribes with `since`, records
everything it saw; `stream_problems` checks what it recorded) and
`ApiPublisher` (publishes at a steady rate through the HTTP API and
records what was acknowledged)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Callable

import requests

from sbproc import Node
from sbws import _BACKGROUND, Client, ClosedBeforeReply, connect_url

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
                 max_sub_attempts: int = 60, op_timeout: float = 4.0, lifetime: float = 150.0,
                 choose_url: Callable[["ResilientSubscriber"], str] | None = None):
        assert urls and channels
        # Picks the URL of each (re)connect instead of round robin over `urls` (a test acting as a balancer).
        self.choose_url = choose_url
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
            url = self.choose_url(self) if self.choose_url else self.urls[self._next_url % len(self.urls)]
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
