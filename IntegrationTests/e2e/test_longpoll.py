"""The long-polling transport (docs/transports.md): `POST /poll` follows
channels from given positions, `POST /rpc` runs commands. Nothing is kept on
a node between polls, so polls may go to any node. Plain `requests`; every
wait is bounded."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import signal
import threading
import time

import requests

from sbclient import TOKEN_SECRET, RawWS, SteadyTraffic, connect, lp_poll, lp_rpc, run, user_token, wait_until

NS_YAML = """\
# written by IntegrationTests/e2e/test_longpoll.py
namespaces:
  small:
    historySize: 5
  nohist:
    historySize: 0
  secret:
    anonymous: false
    publish: false
"""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def poll(node, subs: dict, timeout: float = 5, client: str | None = None, token: str | None = None,
         **extra) -> list:
    body = {"subs": subs, "timeout": timeout, **extra}
    if client is not None:
        body["client"] = client
    r = lp_poll(node, body, token=token)
    assert r.status_code == 200, f"poll {body!r:.200}: HTTP {r.status_code} {r.text[:300]}"
    arr = r.json()
    assert isinstance(arr, list), f"poll answer is not an array: {arr!r:.300}"
    for it in arr:
        assert isinstance(it, dict) and isinstance(it.get("channel"), str), f"bad item {it!r}"
        assert sum(k in it for k in ("pub", "position", "error")) == 1, f"item kind unclear: {it}"
    return arr


POLLS_GAUGE = 'switchboard_connections{transport="longpoll"}'


def polls_waiting(node) -> float:
    """How many long-polls the node holds now (its /metrics gauge; each loop reports within a second)."""
    r = node.http("GET", "/metrics")
    assert r.status_code == 200, r.status_code
    for line in r.text.splitlines():
        if line.startswith(POLLS_GAUGE + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_no_polls(node, timeout: float = 10.0) -> None:
    """Wait until the node holds no long-poll (polls answered just before count for up to a second)."""
    wait_until(lambda: polls_waiting(node) == 0, timeout, "no long-poll held by the node", 0.05)


def wait_polls_held(node, n: int, timeout: float = 10.0) -> None:
    """Wait until the node holds `n` long-polls: the polls under test reached the node and wait there
    (a condition, not a guess at how long that takes). Call wait_no_polls() before starting them."""
    wait_until(lambda: polls_waiting(node) >= n, timeout, f"{n} long-poll(s) held by the node", 0.05)


def first_position(node, ch: str, token: str | None = None) -> dict:
    """The position a first poll (`{}`) gets: {"offset", "epoch"}."""
    arr = poll(node, {ch: {}}, timeout=2, token=token)
    assert len(arr) == 1 and "position" in arr[0] and arr[0]["channel"] == ch, (
        f"a first poll for {ch!r} must get the channel's position: {arr}")
    p = arr[0]["position"]
    return {"offset": p["offset"], "epoch": p["epoch"]}


def timed_poll(node, subs, **kw) -> tuple[list, float]:
    t = time.monotonic()
    arr = poll(node, subs, **kw)
    return arr, time.monotonic() - t


def publish(node, ch, data) -> dict:
    return node.api_result("publish", {"channel": ch, "data": data})


def rpc(node, commands, token=None) -> list:
    r = lp_rpc(node, commands, token=token)
    assert r.status_code == 200, f"/rpc: HTTP {r.status_code} {r.text[:300]}"
    arr = r.json()
    assert isinstance(arr, list), arr
    return arr


def error_body(r: requests.Response) -> dict:
    try:
        doc = r.json()
    except ValueError:
        raise AssertionError(f"HTTP {r.status_code}: body is not JSON: {r.text[:200]!r}")
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), f"no error object: {doc!r}"
    return doc["error"]


class Background:
    """Run `fn` in a thread; `result(timeout)` returns its value or raises its exception."""

    def __init__(self, fn, *args, **kw):
        self._out: list = []
        self.started = time.monotonic()
        self.done_at: float | None = None

        def body():
            try:
                self._out.append(("ok", fn(*args, **kw)))
            except BaseException as e:  # surfaced by result()
                self._out.append(("err", e))
            self.done_at = time.monotonic()

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()

    def running(self) -> bool:
        return self.thread.is_alive()

    def result(self, timeout: float):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"background call still running after {timeout}s"
        kind, v = self._out[0]
        if kind == "err":
            raise v
        return v


class Follower:
    """A long-poll client: keeps {channel: position}, applies answers, records
    every publication and checks it follows the previous position."""

    def __init__(self, channels, client: str | None = None):
        self.pos: dict[str, dict] = {ch: {} for ch in channels}
        self.got: dict[str, list[dict]] = {ch: [] for ch in channels}
        self.problems: list[str] = []
        self.polls = 0
        self.client = client or "f-" + secrets.token_hex(4)

    def apply(self, arr: list) -> None:
        for it in arr:
            ch = it["channel"]
            if ch not in self.pos:
                self.problems.append(f"item for a channel not polled: {it}")
                continue
            if "position" in it:
                p = it["position"]
                if self.pos[ch]:  # the client had a position: it was told it lost something
                    self.problems.append(f"{ch}: position item {p} for the recoverable position {self.pos[ch]}")
                self.pos[ch] = {"offset": p["offset"], "epoch": p["epoch"]}
            elif "pub" in it:
                pub = it["pub"]
                cur = self.pos[ch]
                if not cur:
                    self.problems.append(f"{ch}: pub {pub} before any position")
                elif pub.get("offset") != cur["offset"] + 1:
                    self.problems.append(f"{ch}: pub offset {pub.get('offset')} after position {cur}")
                if "epoch" in pub and cur and pub["epoch"] != cur.get("epoch"):
                    self.problems.append(f"{ch}: pub epoch {pub['epoch']} != {cur}")
                self.got[ch].append(pub)
                self.pos[ch] = {"offset": pub.get("offset"), "epoch": cur.get("epoch") if cur else None}
            else:
                self.problems.append(f"{ch}: error {it}")

    def poll(self, node, timeout: float = 2, token=None) -> list:
        arr = poll(node, {ch: dict(p) for ch, p in self.pos.items()}, timeout=timeout, client=self.client,
                   token=token)
        self.polls += 1
        self.apply(arr)
        return arr


# --------------------------------------------------------------------------
# polling
# --------------------------------------------------------------------------


def test_poll_first_position_at_once(node):
    ch, ch2 = "lp:first", "lp:first-new"
    publish(node, ch, {"n": 1})
    epoch = publish(node, ch, {"n": 2})["epoch"]
    arr, took = timed_poll(node, {ch: {}}, timeout=5)
    assert len(arr) == 1 and arr[0]["channel"] == ch and "position" in arr[0], arr
    pos = arr[0]["position"]
    assert pos["offset"] == 2 and pos["epoch"] == epoch, pos
    assert pos.get("recovered") is not True, pos
    # "At once" against a poll timeout of 5 s: well under it, generous for a loaded 2-core machine.
    assert took < 3, f"a first poll must be answered at once with the position (took {took:.2f}s)"
    # History for one channel and a first poll for another: both, at once.
    arr, took = timed_poll(node, {ch: {"offset": 1, "epoch": epoch}, ch2: {}}, timeout=5)
    assert [it["pub"]["offset"] for it in arr if it["channel"] == ch] == [2], arr
    assert [it["position"]["offset"] for it in arr if it["channel"] == ch2] == [0], arr
    assert took < 3, f"history + a new channel: answered after {took:.2f}s, not at once: {arr}"


def test_poll_completed_by_publication_and_history(node):
    ch = "lp:basic"
    publish(node, ch, {"n": 1})
    pos = first_position(node, ch)
    assert pos["offset"] == 1, pos
    epoch = pos["epoch"]
    # A poll from the current position waits; a publication completes it at once.
    wait_no_polls(node)
    bg = Background(poll, node, {ch: {"offset": 1, "epoch": epoch}}, timeout=10)
    wait_polls_held(node, 1)
    assert bg.running(), f"a poll with nothing new returned at once: {bg.result(1)}"
    t_pub = time.monotonic()
    publish(node, ch, {"n": 2})
    arr = bg.result(5)
    assert bg.done_at - t_pub < 5, f"the waiting poll answered {bg.done_at - t_pub:.2f}s after the publication"
    assert len(arr) == 1 and arr[0]["channel"] == ch, arr
    assert arr[0]["pub"]["offset"] == 2 and arr[0]["pub"]["data"] == {"n": 2}, arr

    # What history already holds comes at once, oldest first.
    publish(node, ch, {"n": 3})
    publish(node, ch, {"n": 4})
    arr, took = timed_poll(node, {ch: {"offset": 2, "epoch": epoch}}, timeout=10)
    assert took < 5, f"history after the position must be answered at once (took {took:.2f}s)"
    assert [(it["pub"]["offset"], it["pub"]["data"]) for it in arr] == [(3, {"n": 3}), (4, {"n": 4})], arr
    arr, took = timed_poll(node, {ch: {"offset": 0, "epoch": epoch}}, timeout=10)
    assert [it["pub"]["offset"] for it in arr] == [1, 2, 3, 4], arr
    assert took < 5


def test_poll_timeout_returns_empty(node):
    ch = "lp:quiet"
    epoch = publish(node, ch, "x")["epoch"]
    arr, took = timed_poll(node, {ch: {"offset": 1, "epoch": epoch}}, timeout=1)
    assert arr == [], arr
    assert 0.8 <= took <= 4.5, f"timeout 1 answered after {took:.2f}s"
    arr, took = timed_poll(node, {ch: {"offset": 1, "epoch": epoch}}, timeout=0)
    assert arr == [] and took < 1.0, (arr, took)


def test_poll_loop_gets_everything_once(node):
    """Polls in a loop while publications come through the API and /rpc: each
    one arrives once, in order, in the channel it was published to."""
    chans = ["lp:loop1", "lp:loop2"]
    f = Follower(chans)
    f.poll(node)  # positions at offset 0
    assert all(f.pos[ch].get("offset") == 0 for ch in chans), f.pos
    n_total = 90
    sent: dict[str, dict[int, object]] = {ch: {} for ch in chans}
    errors: list[str] = []

    def publisher():
        try:
            for i in range(n_total):
                ch = chans[i % 2]
                data = {"i": i}
                if i % 3 == 0:
                    rep = rpc(node, [{"id": 1, "publish": {"channel": ch, "data": data}}])[0]
                    off = rep["result"]["offset"]
                else:
                    off = publish(node, ch, data)["offset"]
                sent[ch][off] = data
                time.sleep(random.random() * 0.02)
        except Exception as e:
            errors.append(repr(e))

    t = threading.Thread(target=publisher, daemon=True)
    t.start()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and f.polls < 400:
        f.poll(node, timeout=2)
        if not t.is_alive() and all(len(f.got[ch]) >= len(sent[ch]) for ch in chans):
            break
    t.join(5)
    assert not errors, errors
    for _ in range(2):  # nothing more comes
        arr = f.poll(node, timeout=0)
        assert arr == [], arr
    assert f.problems == [], f.problems
    assert f.polls > 3, "the publications should have been spread over several polls"
    for ch in chans:
        n = len(sent[ch])
        assert [p["offset"] for p in f.got[ch]] == list(range(1, n + 1)), f"{ch}: {[p['offset'] for p in f.got[ch]]}"
        assert [p["data"] for p in f.got[ch]] == [sent[ch][o] for o in range(1, n + 1)]


def test_poll_unrecoverable_positions(node_factory):
    node = node_factory.start(config_text=NS_YAML)
    ch = "lp:epoch"
    for i in range(3):
        epoch = publish(node, ch, i)["epoch"]
    slow: list[float] = []  # how long each unrecoverable poll took: they must be answered at once
    arr, took = timed_poll(node, {ch: {"offset": 1, "epoch": epoch + "-old"}}, timeout=5)
    assert arr == [{"channel": ch, "position": {"offset": 3, "epoch": epoch, "recovered": False}}], arr
    slow.append(took)

    small = "small:trim"
    for i in range(1, 21):
        sepoch = publish(node, small, i)["epoch"]
    arr, took = timed_poll(node, {small: {"offset": 2, "epoch": sepoch}}, timeout=5)
    assert arr == [{"channel": small, "position": {"offset": 20, "epoch": sepoch, "recovered": False}}], (
        f"offsets 3..15 were trimmed away: the poll must say recovered false, never a partial list: {arr}")
    slow.append(took)
    arr = poll(node, {small: {"offset": 16, "epoch": sepoch}}, timeout=5)
    assert [it["pub"]["offset"] for it in arr] == [17, 18, 19, 20], arr
    # Both in one poll: each channel on its own.
    arr, took = timed_poll(node, {small: {"offset": 19, "epoch": sepoch}, ch: {"offset": 0, "epoch": "nope"}},
                           timeout=5)
    slow.append(took)
    by_ch = {}
    for it in arr:
        by_ch.setdefault(it["channel"], []).append(it)
    assert [it["pub"]["offset"] for it in by_ch[small]] == [20], arr
    assert by_ch[ch] == [{"channel": ch, "position": {"offset": 3, "epoch": epoch, "recovered": False}}], arr
    assert max(slow) < 3, f"unrecoverable positions must be answered at once, took {[round(t, 2) for t in slow]}s"


def test_poll_channel_without_history(node_factory):
    """No offsets: a client can still follow the channel: a publication made
    while its poll waits completes the poll."""
    node = node_factory.start(config_text=NS_YAML)
    ch = "nohist:live"
    first = poll(node, {ch: {}}, timeout=1)
    pos = {}
    for it in first:
        assert it["channel"] == ch and "error" not in it, first
        if "position" in it:
            pos = {k: v for k, v in it["position"].items() if k in ("offset", "epoch")}
    wait_no_polls(node)
    bg = Background(poll, node, {ch: pos}, timeout=8)
    wait_polls_held(node, 1)
    assert bg.running(), f"a poll on a quiet channel without history returned at once: {bg.result(1)}"
    publish(node, ch, {"live": 1})
    arr = bg.result(5)
    assert [it.get("pub", {}).get("data") for it in arr] == [{"live": 1}], arr
    assert "offset" not in arr[0]["pub"], arr


def test_poll_alternating_nodes_cluster(cluster):
    nodes = cluster.start(2)
    chans = ["lp:c1", "lp:c2"]
    # A poll waiting on node1 is completed at once by a publication on node0.
    wake = "lp:wake"
    pos = first_position(nodes[1], wake)
    wait_no_polls(nodes[1])
    bg = Background(poll, nodes[1], {wake: pos}, timeout=10)
    wait_polls_held(nodes[1], 1)
    assert bg.running(), "nothing new: the poll should wait"
    t_pub = time.monotonic()
    publish(nodes[0], wake, "cross")
    arr = bg.result(8)
    assert [it.get("pub", {}).get("data") for it in arr] == ["cross"], arr
    assert bg.done_at - t_pub < 5, f"cross-node wake-up took {bg.done_at - t_pub:.2f}s"

    f = Follower(chans)
    f.poll(nodes[0])
    n_total = 80
    sent: dict[str, dict[int, object]] = {ch: {} for ch in chans}
    errors: list[str] = []

    def publisher():
        try:
            for i in range(n_total):
                ch, node = chans[i % 2], nodes[(i // 2) % 2]
                data = {"i": i, "via": node.name}
                if i % 4 == 3:
                    off = rpc(node, [{"id": 1, "publish": {"channel": ch, "data": data}}])[0]["result"]["offset"]
                else:
                    off = publish(node, ch, data)["offset"]
                sent[ch][off] = data
                time.sleep(random.random() * 0.03)
        except Exception as e:
            errors.append(repr(e))

    t = threading.Thread(target=publisher, daemon=True)
    t.start()
    per_node = [0, 0]
    deadline = time.monotonic() + 45
    k = 1
    while time.monotonic() < deadline and f.polls < 400:
        f.poll(nodes[k % 2], timeout=2)
        per_node[k % 2] += 1
        k += 1
        if not t.is_alive() and all(len(f.got[ch]) >= len(sent[ch]) for ch in chans):
            break
    t.join(5)
    assert not errors, errors
    for node in nodes:
        assert f.poll(node, timeout=0) == []
    assert f.problems == [], f.problems
    assert min(per_node) >= 2, per_node
    for ch in chans:
        n = len(sent[ch])
        assert n == n_total // 2
        assert [p["offset"] for p in f.got[ch]] == list(range(1, n + 1)), f"{ch}: {[p['offset'] for p in f.got[ch]]}"
        assert [p["data"] for p in f.got[ch]] == [sent[ch][o] for o in range(1, n + 1)]


# --------------------------------------------------------------------------
# /rpc
# --------------------------------------------------------------------------


def test_rpc_commands_in_order(node):
    ch = "lp:rpc"
    ws = RawWS(node.host, node.port)
    try:
        ws_client = ws.handshake()["client"]
        wsub = ws.call("subscribe", {"channel": ch})
        assert "result" in wsub, wsub
        cmds = [{"id": 1, "publish": {"channel": ch, "data": {"n": 1}}},
                {"id": 2, "publish": {"channel": ch, "data": {"n": 2}}},
                {"id": 3, "history": {"channel": ch}},
                {"id": 4, "presence": {"channel": ch}},
                {"id": 5, "presenceStats": {"channel": ch}},
                {"id": 6, "ping": {}}]
        arr = rpc(node, cmds)
        assert [r.get("id") for r in arr] == [1, 2, 3, 4, 5, 6], arr
        assert all("result" in r for r in arr), arr
        assert arr[0]["result"]["offset"] == 1 and arr[1]["result"]["offset"] == 2, arr
        assert [p["offset"] for p in arr[2]["result"]["publications"]] == [1, 2], "history ran after the publishes"
        assert [p["data"] for p in arr[2]["result"]["publications"]] == [{"n": 1}, {"n": 2}]
        assert list(arr[3]["result"]["clients"]) == [ws_client], arr[3]
        assert arr[4]["result"] == {"clients": 1, "users": 1}, arr[4]
        assert arr[5]["result"] == {}, arr[5]
        # The WebSocket subscriber got both publications.
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            got += [o["pub"] for o in ws.recv_json(max(0.1, deadline - time.monotonic())) if "pub" in o]
        assert [(p["offset"], p["data"]) for p in got] == [(1, {"n": 1}), (2, {"n": 2})], got

        # subscribe / unsubscribe / connect are refused with 107, each in its place.
        arr = rpc(node, [{"id": 1, "ping": {}},
                         {"id": 2, "subscribe": {"channel": ch}},
                         {"id": 3, "unsubscribe": {"channel": ch}},
                         {"id": 4, "connect": {}},
                         {"id": 5, "publish": {"channel": ch, "data": {"n": 3}}},
                         {"id": 6, "nope": {}}])
        assert [r.get("id") for r in arr] == [1, 2, 3, 4, 5, 6], arr
        assert arr[0] == {"id": 1, "result": {}}
        for r in arr[1:4]:
            assert r.get("error", {}).get("code") == 107, f"/rpc must refuse it with 107: {r}"
        assert arr[4]["result"]["offset"] == 3, arr[4]
        assert arr[5].get("error", {}).get("code") == 104, arr[5]

        # Bad bodies run nothing.
        for body, status in ((b"not json", 400), (b"[1, 2]", 400), (b'{"publish": {}}', 400),
                             (json.dumps({"id": 1, "publish": {"channel": ch, "data": 0}}).encode() + b"\n{oops",
                              400),
                             (json.dumps({"id": 1, "publish": {"channel": ch, "data": "q" * 70000}}).encode(), 413)):
            r = lp_rpc(node, body)
            assert r.status_code == status, f"/rpc {body[:50]!r}: HTTP {r.status_code} {r.text[:200]}"
        h = node.api_result("history", {"channel": ch})
        assert h["offset"] == 3, f"a refused /rpc body published something: {h}"
    finally:
        ws.close()


# --------------------------------------------------------------------------
# errors and limits
# --------------------------------------------------------------------------


def test_poll_bad_requests(node):
    ch = "lp:bad"
    epoch = publish(node, ch, 1)["epoch"]
    cases = [b"not json", b"[]", b"42", b'{"subs": [1, 2]}', b'{"subs": "lp:bad"}', b'{"subs": {"lp:bad": 5}}',
             b'{"subs": {"lp:bad": [1]}}', b'{"subs": {"lp:bad": {"offset": "one", "epoch": "e"}}}',
             b'{"subs": {"lp:bad": {}}', b"\xff\xfe"]
    for body in cases:
        t = time.monotonic()
        r = lp_poll(node, None, raw=body, timeout=10)
        assert r.status_code == 400, f"poll body {body[:60]!r}: HTTP {r.status_code} {r.text[:200]}"
        assert time.monotonic() - t < 5, "a bad poll must be refused at once, not after waiting"
    r = lp_poll(node, None, raw=json.dumps({"subs": {ch: {}}, "pad": "p" * 70000}).encode(), timeout=10)
    assert r.status_code == 413, f"70 KB poll body: HTTP {r.status_code}"

    # Bad channel names: 400 (Errors) or an error object for that channel
    # (the answer's `error` item); a good channel in the same poll still works.
    for bad in ("", "x" * 300, "bad\u0001name"):
        r = lp_poll(node, {"subs": {bad: {}, ch: {"offset": 0, "epoch": epoch}}, "timeout": 2})
        if r.status_code == 400:
            continue
        assert r.status_code == 200, f"bad channel {bad!r:.20}: HTTP {r.status_code} {r.text[:200]}"
        arr = r.json()
        errs = [it for it in arr if it.get("channel") == bad]
        assert len(errs) == 1 and errs[0].get("error", {}).get("code") in (103, 107), arr
        assert [it["pub"]["offset"] for it in arr if it.get("channel") == ch] == [1], arr

    # After all that, a good poll.
    arr = poll(node, {ch: {"offset": 0, "epoch": epoch}}, timeout=1)
    assert [it["pub"]["data"] for it in arr] == [1], arr


def test_poll_tokens(token_node):
    node = token_node
    ch = "lp:tok"
    good = user_token(TOKEN_SECRET, "bob")
    bad_tokens = [user_token("wrong-secret", "bob"), "not-a-jwt", good[:-2] + ("xx" if good[-2:] != "xx" else "yy")]
    for tok in bad_tokens:
        r = lp_poll(node, {"subs": {ch: {}}, "timeout": 1}, token=tok)
        assert r.status_code == 401, f"bad Bearer token: HTTP {r.status_code} {r.text[:200]}"
        assert error_body(r)["code"] == 101
        r = lp_poll(node, {"subs": {ch: {}}, "timeout": 1, "token": tok})
        assert r.status_code == 401, f"bad token in the body: HTTP {r.status_code} {r.text[:200]}"
        assert error_body(r)["code"] == 101
        r = lp_rpc(node, [{"id": 1, "publish": {"channel": ch, "data": "bad"}}], token=tok)
        assert r.status_code == 401, f"/rpc with a bad token: HTTP {r.status_code} {r.text[:200]}"
    expired = user_token(TOKEN_SECRET, "bob", ttl=-60)
    r = lp_poll(node, {"subs": {ch: {}}, "timeout": 1}, token=expired)
    assert r.status_code == 401 and error_body(r)["code"] == 109, (r.status_code, r.text[:200])
    assert node.api_result("history", {"channel": ch})["publications"] == [], "a refused /rpc published"

    arr = poll(node, {ch: {}}, timeout=1, token=good)  # Bearer
    assert arr and arr[0]["position"]["offset"] == 0, arr
    r = lp_poll(node, {"subs": {ch: {}}, "timeout": 1, "token": good})
    assert r.status_code == 200 and [it.get("position", {}).get("offset") for it in r.json()] == [0], r.text[:200]
    rep = rpc(node, [{"id": 1, "publish": {"channel": ch, "data": "good"}}], token=good)[0]
    assert rep["result"]["offset"] == 1, rep


def test_poll_presence(token_node):
    """A poller that names its `client` is in presence between polls, under `lp-` and a hash of its user
    and client id (another user's poller with the same id gets an entry of its own, so no one can write
    over someone else's entry), with its user; a poll without `client` is not listed; a poller that
    stops polling drops out after its wait plus 10 s."""
    node = token_node
    ch = "lp:present"
    bob = user_token(TOKEN_SECRET, "bob")
    eve = user_token(TOKEN_SECRET, "eve")
    poll(node, {ch: {}}, timeout=0, token=bob)
    assert node.api_result("presence", {"channel": ch})["clients"] == {}, "a poll without client is not listed"
    started = time.monotonic()
    for token in (bob, bob, eve):
        poll(node, {ch: {}}, timeout=0, client="tab-1", token=token)
    clients = node.api_result("presence", {"channel": ch})["clients"]
    assert len(clients) == 2 and all(k.startswith("lp-") and v["client"] == k for k, v in clients.items()), clients
    assert sorted(v["user"] for v in clients.values()) == ["bob", "eve"], clients
    assert node.api_result("presenceStats", {"channel": ch}) == {"clients": 2, "users": 2}

    async def seen_by_websocket():
        c = await connect(node, token=bob)
        reply = await c.call("presence", {"channel": ch})
        assert set(reply["result"]["clients"]) == set(clients), reply
        await c.close()

    run(seen_by_websocket())
    # No more polls: out of presence once the wait (0 s) and the grace (10 s) are over, not before.
    assert wait_until(lambda: node.api_result("presence", {"channel": ch})["clients"] == {}, timeout=20)
    assert time.monotonic() - started >= 9, "dropped before the grace was over"


def test_poll_presence_pollers_per_address_are_capped(node_factory):
    """One address naming a new `client` in every poll lists at most 4 x maxPollsPerIP pollers in a
    channel's presence (here 4 x 4); the polls past that are still answered; the node stays healthy."""
    node = node_factory.start("--max-polls-per-ip", "4")
    ch = "lp:flood"
    for i in range(40):
        arr = poll(node, {ch: {}}, timeout=0, client=f"made-up-{i}")
        assert arr and arr[0]["channel"] == ch and "position" in arr[0], arr
    clients = node.api_result("presence", {"channel": ch})["clients"]
    # Each event loop lists its share of the 16; polls spread over the loops, so 8-16 are listed.
    assert 8 <= len(clients) <= 16 and all(k.startswith("lp-") for k in clients), len(clients)
    # A WebSocket client still gets in, and sees the capped list.
    async def joins():
        c = await connect(node)
        await c.subscribe(ch)
        reply = await c.call("presence", {"channel": ch})
        assert len(reply["result"]["clients"]) == len(clients) + 1, len(reply["result"]["clients"])
        await c.close()

    run(joins())


def test_poll_presence_across_nodes(cluster):
    """With Redis, a poller's presence entry written by the node that took its poll is read on any node,
    by the HTTP API and by a WebSocket client there."""
    nodes = cluster.start(2)
    ch = "lp:present-x"
    poll(nodes[0], {ch: {}}, timeout=0, client="tab-x")
    wait_until(lambda: len(nodes[1].api_result("presence", {"channel": ch})["clients"]) == 1, timeout=10)
    (entry,) = nodes[1].api_result("presence", {"channel": ch})["clients"].values()
    assert entry["client"].startswith("lp-") and entry.get("user", "") == "", entry

    async def from_websocket():
        c = await connect(nodes[1])
        reply = await c.call("presence", {"channel": ch})
        assert list(reply["result"]["clients"]) == [entry["client"]], reply
        await c.close()

    run(from_websocket())


def test_poll_three_concurrent_for_one_client(node):
    ch = "lp:limit"
    epoch = publish(node, ch, 0)["epoch"]
    client = "lim-" + secrets.token_hex(4)
    pos = {ch: {"offset": 1, "epoch": epoch}}
    wait_no_polls(node)
    a = Background(poll, node, pos, timeout=8, client=client)
    b = Background(poll, node, pos, timeout=8, client=client)
    wait_polls_held(node, 2)
    assert a.running() and b.running(), "the first two polls should be waiting"
    t = time.monotonic()
    r = lp_poll(node, {"subs": pos, "timeout": 8, "client": client})
    assert r.status_code == 429, f"third poll for one client: HTTP {r.status_code} {r.text[:200]}"
    assert time.monotonic() - t < 4, "the 429 must come at once (the held polls wait 8 s)"
    # Another client is not limited.
    arr = poll(node, pos, timeout=1, client="other-" + secrets.token_hex(4))
    assert arr == []
    assert a.running() and b.running(), "the two held polls must still be waiting"
    t_pub = time.monotonic()
    publish(node, ch, {"n": 2})
    for bg in (a, b):
        arr = bg.result(5)
        assert [(it["pub"]["offset"], it["pub"]["data"]) for it in arr] == [(2, {"n": 2})], arr
        assert bg.done_at - t_pub < 4
    # The slots are free again.
    arr = poll(node, {ch: {"offset": 2, "epoch": epoch}}, timeout=0, client=client)
    assert arr == []


def test_poll_permission_denied(node_factory):
    node = node_factory.start(token_secret=TOKEN_SECRET, config_text=NS_YAML)
    sec, opn = "secret:lp", "lp:open"
    arr = poll(node, {sec: {}, opn: {}}, timeout=2)
    by = {it["channel"]: it for it in arr}
    assert set(by) == {sec, opn}, arr
    assert by[sec].get("error", {}).get("code") == 103, f"anonymous on an anonymous:false channel: {by[sec]}"
    assert by[opn]["position"]["offset"] == 0, by[opn]

    tok = user_token(TOKEN_SECRET, "carol")
    arr = poll(node, {sec: {}}, timeout=2, token=tok)
    assert arr and arr[0]["channel"] == sec and "position" in arr[0], arr
    epoch = arr[0]["position"]["epoch"]
    rep = rpc(node, [{"id": 1, "publish": {"channel": sec, "data": "nope"}}], token=tok)[0]
    assert rep.get("error", {}).get("code") == 103, f"publish:false channel via /rpc: {rep}"
    publish(node, sec, {"from": "api"})
    arr = poll(node, {sec: {"offset": 0, "epoch": epoch}}, timeout=2, token=tok)
    assert [it["pub"]["data"] for it in arr] == [{"from": "api"}], arr
    # Anonymous, from a position: still refused, nothing leaks.
    arr = poll(node, {sec: {"offset": 0, "epoch": epoch}}, timeout=1)
    assert len(arr) == 1 and arr[0].get("error", {}).get("code") == 103, arr


def test_poll_while_draining(node_factory):
    node = node_factory.start(drain_seconds=4)
    ch = "lp:drain"
    pos = first_position(node, ch)
    # A poll already waiting when the drain starts is answered (not reset, not left to hang).
    wait_no_polls(node)
    inflight = Background(lp_poll, node, {"subs": {ch: pos}, "timeout": 30})
    wait_polls_held(node, 1)
    assert inflight.running()
    t0 = time.monotonic()
    node.signal(signal.SIGTERM)
    wait_until(lambda: node.http("GET", "/readyz", 1.0).status_code == 503, 1.5, "/readyz to turn 503", 0.05)
    r = lp_poll(node, {"subs": {ch: {}}, "timeout": 1})
    assert r.status_code == 503, f"poll while draining: HTTP {r.status_code} {r.text[:200]}"
    r = inflight.result(6)
    assert inflight.done_at - t0 < 4.5, f"the waiting poll was answered {inflight.done_at - t0:.1f}s into the drain"
    assert r.status_code in (200, 503), f"waiting poll at drain: HTTP {r.status_code} {r.text[:200]}"
    if r.status_code == 200:
        for it in r.json():
            assert ("disconnect" in it and it["disconnect"].get("code") == 3001) or it.get("channel") == ch, it
    assert node.wait_exit(10) == 0


def test_many_bad_requests_keep_node_healthy(node):
    ch = "lp:health"

    async def main():
        async with SteadyTraffic(node) as steady:
            def abuse():
                codes = []
                client = "abuse-" + secrets.token_hex(3)
                for i in range(40):
                    codes.append(lp_poll(node, None, raw=b"{{{" * (i + 1)).status_code)
                    codes.append(lp_poll(node, None, raw=b'{"subs": 7}').status_code)
                    codes.append(lp_poll(node, None, raw=b"p" * 70000).status_code)
                    codes.append(lp_poll(node, {"subs": {ch: {}}, "timeout": 0}, token="bad").status_code)
                    codes.append(lp_rpc(node, b"][").status_code)
                    codes.append(lp_rpc(node, [{"id": 1, "subscribe": {"channel": ch}}]).status_code)
                    codes.append(lp_poll(node, {"subs": {ch: {}}, "timeout": 0, "client": client}).status_code)
                return codes

            codes = await asyncio.to_thread(abuse)
            assert all(c < 500 for c in codes), f"server errors among {sorted(set(codes))}"
            assert set(codes[0::7]) == {400} and set(codes[1::7]) == {400} and set(codes[2::7]) == {413}, codes[:14]
            await steady.check()
            r = await asyncio.to_thread(node.http, "GET", "/healthz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            ws = await connect(node)
            await ws.subscribe(ch)
            epoch = (await asyncio.to_thread(first_position, node, ch))["epoch"]
            rep = (await asyncio.to_thread(rpc, node, [{"id": 1, "publish": {"channel": ch, "data": "ok"}}]))[0]
            assert rep["result"]["offset"] == 1
            assert (await ws.wait_pub(ch))["data"] == "ok"
            arr = await asyncio.to_thread(poll, node, {ch: {"offset": 0, "epoch": epoch}}, 2)
            assert [it["pub"]["data"] for it in arr] == ["ok"], arr

    run(main(), timeout=120)
