"""The SSE transport (docs/transports.md): `POST /sse` with the connect
params as its body (or, without a token, `GET /sse?connect=...`) streams
events, commands go in `POST /sse?session=...` to any node.

Plain sockets for the stream (sbclient.SSEStream parses `data:`/`id:` lines
itself), `requests` for the POSTs. Every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import pytest
import requests

from sbclient import (TOKEN_SECRET, SSEStream, SteadyTraffic, b64url_encode_json, close_all_sse, connect,
                      decode_event_id, run, sse_post, user_token)

NS_YAML = """\
# written by IntegrationTests/e2e/test_sse.py
namespaces:
  nohist:
    historySize: 0
  small:
    historySize: 5
  secret:
    anonymous: false
    publish: false
"""


@pytest.fixture(autouse=True)
def _close_streams():
    yield
    close_all_sse()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def open_stream(node, connect=None, last_event_id=None, **kw) -> SSEStream:
    s = SSEStream(node, connect=connect, last_event_id=last_event_id, **kw)
    assert s.status == 200, f"{s.method} {s.path}: {s.status_line} {s.body[:300]!r}"
    ctype = s.headers.get("content-type", "")
    assert ctype.startswith("text/event-stream"), f"Content-Type {ctype!r}"
    s.wait_connected()
    return s


def post_ok(stream: SSEStream, commands, node=None) -> None:
    n = 1 if isinstance(commands, dict) else len(commands)
    r = stream.post(commands, node=node)
    assert r.status_code == 202, f"POST /sse {commands!r:.200}: HTTP {r.status_code} {r.text[:300]}"
    assert r.json() == {"accepted": n}, r.text


def publish(node, ch, data) -> dict:
    return node.api_result("publish", {"channel": ch, "data": data})


def history_offsets(node, ch) -> list[int]:
    return [p["offset"] for p in node.api_result("history", {"channel": ch})["publications"]]


def event_id_problems(stream: SSEStream) -> list[str]:
    """Every event carries an `id:` that decodes to {channel: position}, and
    its data is exactly one JSON object."""
    out = []
    for i, e in enumerate(list(stream.events)):
        if e.id is None:
            out.append(f"event #{i} has no id: {e.data!r:.120}")
        else:
            try:
                decode_event_id(e.id)
            except ValueError as ex:
                out.append(f"event #{i} id {e.id!r}: {ex}")
        if not e.json_ok or not isinstance(e.obj, dict):
            out.append(f"event #{i} data is not one JSON object: {e.data!r:.200}")
    return out


def pub_id_problems(stream: SSEStream, ch: str) -> list[str]:
    """Each pub event of `ch` has an id whose position for `ch` is that pub's offset."""
    out = []
    for e in stream.pub_events(ch):
        try:
            pos = decode_event_id(e.id).get(ch) if e.id else None
        except ValueError as ex:
            out.append(str(ex))
            continue
        if not pos or pos.get("offset") != e.obj["pub"].get("offset"):
            out.append(f"pub {e.obj['pub'].get('offset')} carries id position {pos}")
    return out


def reply_ids(stream: SSEStream) -> list[int]:
    return [o["id"] for o in stream.objs() if isinstance(o, dict) and "id" in o]


def delivered(stream: SSEStream, ch: str) -> list[dict]:
    """The publications of `ch` a client got on this stream: the ones the
    connect result recovered (subs[ch].publications), then the pub events."""
    out = list(((getattr(stream, "info", None) or {}).get("subs") or {}).get(ch, {}).get("publications") or [])
    return out + stream.pubs(ch)


def wait_delivered(stream: SSEStream, ch: str, n: int, timeout: float = 5.0) -> list[dict]:
    stream.wait_until(lambda: len(delivered(stream, ch)) >= n, timeout,
                      f"{n} publications in {ch!r} (have {[p.get('offset') for p in delivered(stream, ch)]})")
    return delivered(stream, ch)


def offsets(pubs) -> list:
    return [p.get("offset") for p in pubs]


SENTINEL = {"sentinel": True}


def until_sentinel(node, stream: SSEStream, ch: str, timeout: float = 10.0) -> list[dict]:
    """Publish a sentinel in `ch` (through `node`'s API) and wait until `stream`
    delivers it. A channel's publications reach a subscriber in offset order,
    so by then everything published before it has arrived, a late duplicate
    included: this replaces "sleep, then check nothing more came". Returns
    what the stream delivered in `ch`, sentinels left out."""
    publish(node, ch, SENTINEL)
    stream.wait_until(lambda: any(p.get("data") == SENTINEL for p in delivered(stream, ch)), timeout,
                      f"the sentinel in {ch!r} (have {offsets(delivered(stream, ch))})")
    return [p for p in delivered(stream, ch) if p.get("data") != SENTINEL]


def ping_sentinel(stream: SSEStream, cid: int, node=None, timeout: float = 10.0) -> None:
    """POST a ping (through `node`, default the stream's) and wait for its
    reply: a session runs its commands in the order accepted, so any reply
    of an earlier command, a duplicate included, is on the stream by then."""
    post_ok(stream, {"id": cid, "ping": {}}, node=node)
    stream.wait_reply(cid, timeout=timeout)


def error_body(r: requests.Response) -> dict:
    try:
        doc = r.json()
    except ValueError:
        raise AssertionError(f"HTTP {r.status_code}: body is not JSON: {r.text[:200]!r}")
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), f"no error object: {doc!r}"
    err = doc["error"]
    assert isinstance(err.get("code"), int) and isinstance(err.get("message"), str), err
    return err


# --------------------------------------------------------------------------
# the stream, commands, replies, publications
# --------------------------------------------------------------------------


def test_sse_connect_subscribe_publish(node):
    ch, ch2 = "sse:basic", "sse:second"
    s = open_stream(node)  # no connect parameter: anonymous, no subscriptions
    assert s.chunked, f"the stream is not chunked: headers {s.headers}"
    info = s.info
    assert isinstance(info.get("client"), str) and info["client"], info
    assert isinstance(info.get("session"), str) and info["session"], info
    assert info["session"] != info["client"], "the session id must not be the public client id"
    assert isinstance(info.get("node"), str) and info["node"], info
    assert isinstance(info.get("ping"), int), info
    assert info.get("pong") is False, f"SSE cannot answer pings: pong must be false: {info}"
    assert decode_event_id(s.events[0].id) == {}, "no subscriptions yet: the first id is {}"

    post_ok(s, {"id": 2, "subscribe": {"channel": ch}})
    rep = s.wait_reply(2)
    assert "result" in rep, rep
    epoch = rep["result"]["epoch"]
    assert rep["result"]["offset"] == 0 and isinstance(epoch, str), rep
    ev = s.wait_event(lambda e: isinstance(e.obj, dict) and e.obj.get("id") == 2)[1]
    assert decode_event_id(ev.id) == {ch: {"offset": 0, "epoch": epoch}}, (
        f"the subscribe reply's id must hold the new subscription: {decode_event_id(ev.id)}")

    assert publish(node, ch, {"n": 1})["offset"] == 1                      # through the HTTP API
    post_ok(s, {"id": 3, "publish": {"channel": ch, "data": {"n": 2}}})    # a POSTed command
    rep = s.wait_reply(3)
    assert rep.get("result", {}).get("offset") == 2 and rep["result"].get("epoch") == epoch, rep
    # Several commands in one POST: replies come on the stream, in command order.
    post_ok(s, [{"id": 4, "publish": {"channel": ch, "data": {"n": 3}}},
                {"id": 5, "history": {"channel": ch}},
                {"id": 6, "ping": {}},
                {"id": 7, "presence": {"channel": ch}}])
    s.wait_reply(7)
    rep4, rep5, rep6, rep7 = (s.wait_reply(i) for i in (4, 5, 6, 7))
    assert rep4["result"]["offset"] == 3, rep4
    assert offsets(rep5["result"]["publications"]) == [1, 2, 3], f"history ran after the publish before it: {rep5}"
    assert rep6 == {"id": 6, "result": {}}, rep6
    assert s.client in rep7["result"]["clients"], f"the SSE client is in presence: {rep7}"
    assert info["session"] not in json.dumps(rep7), "presence must not leak the session id"

    pubs = until_sentinel(node, s, ch)  # offset 4
    assert offsets(pubs) == [1, 2, 3], f"pubs {pubs}"
    assert [p["data"] for p in pubs] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert pubs[1]["info"]["client"] == s.client, f"a POSTed publish carries the publisher's client id: {pubs[1]}"
    assert "info" not in pubs[0] or pubs[0]["info"].get("client") != s.client, pubs[0]
    for e in s.pub_events(ch):
        assert decode_event_id(e.id) == {ch: {"offset": e.obj["pub"]["offset"], "epoch": epoch}}, (
            f"a pub event's id holds its own offset: {decode_event_id(e.id)} for {e.obj}")

    # Any Content-Type is accepted for the commands.
    for k, ctype in enumerate(("application/json", "application/x-www-form-urlencoded", "")):
        r = sse_post(node, s.session, {"id": 20 + k, "ping": {}}, content_type=ctype)
        assert r.status_code == 202, f"Content-Type {ctype!r}: HTTP {r.status_code} {r.text[:200]}"
        assert s.wait_reply(20 + k) == {"id": 20 + k, "result": {}}

    # A second subscription: later ids hold both channels.
    post_ok(s, {"id": 8, "subscribe": {"channel": ch2}})
    epoch2 = s.wait_reply(8)["result"]["epoch"]
    publish(node, ch, {"n": 4})  # offset 5 (the sentinel took 4)
    e = s.wait_event(lambda e: isinstance(e.obj, dict) and e.obj.get("pub", {}).get("offset") == 5)[1]
    assert decode_event_id(e.id) == {ch: {"offset": 5, "epoch": epoch}, ch2: {"offset": 0, "epoch": epoch2}}
    # Unsubscribe: the channel leaves the ids, its publications stop.
    post_ok(s, {"id": 9, "unsubscribe": {"channel": ch}})
    i9, e9 = s.wait_event(lambda e: isinstance(e.obj, dict) and e.obj.get("id") == 9)
    assert e9.obj == {"id": 9, "result": {}}, e9.obj
    assert decode_event_id(e9.id) == {ch2: {"offset": 0, "epoch": epoch2}}, decode_event_id(e9.id)
    publish(node, ch, {"n": 5})
    publish(node, ch2, {"m": 1})
    assert [p["data"] for p in until_sentinel(node, s, ch2)] == [{"m": 1}]
    assert offsets(s.pubs(ch)) == [1, 2, 3, 4, 5], "a publication after unsubscribe arrived"

    assert reply_ids(s) == [1, 2, 3, 4, 5, 6, 7, 20, 21, 22, 8, 9], f"replies out of order or doubled: {reply_ids(s)}"
    assert event_id_problems(s) == []
    assert not s.ended and s.errors == []


def test_sse_connect_params_token_subs_recovery(token_node):
    node = token_node
    ch = "sse:params"
    r1 = publish(node, ch, {"n": 1})
    publish(node, ch, {"n": 2})
    publish(node, ch, {"n": 3})
    epoch = r1["epoch"]
    tok = user_token(TOKEN_SECRET, "alice")
    s = open_stream(node, connect={"token": tok, "name": "e2e", "subs": {ch: {"offset": 1, "epoch": epoch}}}, post=True)
    assert s.info.get("user") == "alice", s.info
    sub = (s.info.get("subs") or {}).get(ch)
    assert sub is not None, f"connect with subs: no subs[{ch!r}] in the result: {s.info}"
    assert sub.get("recovered") is True and sub.get("epoch") == epoch, sub
    assert decode_event_id(s.events[0].id).get(ch, {}).get("epoch") == epoch
    publish(node, ch, {"n": 4})
    got = until_sentinel(node, s, ch)  # offset 5
    assert offsets(got) == [2, 3, 4], f"recovered + live must be 2, 3, 4 exactly once: {offsets(got)}"
    assert [p["data"] for p in got] == [{"n": 2}, {"n": 3}, {"n": 4}]
    assert decode_event_id(s.last_id) == {ch: {"offset": 5, "epoch": epoch}}
    # The user shows in what the session publishes.
    post_ok(s, {"id": 2, "publish": {"channel": ch, "data": "from alice"}})
    p = s.wait_pubs(ch, 3)[-1]  # 4, the sentinel, then this one
    assert p["data"] == "from alice" and p["info"] == {"client": s.client, "user": "alice"}, p
    assert event_id_problems(s) == []


# --------------------------------------------------------------------------
# resume with Last-Event-ID
# --------------------------------------------------------------------------


def test_sse_resume_last_event_id(node_factory):
    """An EventSource reconnects to the same URL (the `connect` it was opened
    with) and sends `Last-Event-ID`: every channel of the old session is back,
    what was published in between arrives once, in order."""
    node = node_factory.start(config_text=NS_YAML)
    ch1, ch2, nh = "res:url", "res:posted", "nohist:res"
    url_connect = {"subs": {ch1: {}}}
    a = open_stream(node, connect=url_connect)
    post_ok(a, [{"id": 2, "subscribe": {"channel": ch2}}, {"id": 3, "subscribe": {"channel": nh}}])
    a.wait_reply(3)
    for i in range(1, 4):
        publish(node, ch1, {"c": 1, "n": i})
        publish(node, ch2, {"c": 2, "n": i})
    publish(node, nh, "before")
    a.wait_pubs(ch1, 3)
    a.wait_pubs(ch2, 3)
    a.wait_pubs(nh, 1)
    last = a.last_id
    pos = decode_event_id(last)
    assert pos[ch1]["offset"] == 3 and pos[ch2]["offset"] == 3, pos
    assert pos[nh] == {}, f"a channel without history appears as {{}}: {pos}"
    epoch1, epoch2 = pos[ch1]["epoch"], pos[ch2]["epoch"]
    assert event_id_problems(a) == []
    a.close()

    for i in range(4, 9):
        publish(node, ch1, {"c": 1, "n": i})
        publish(node, ch2, {"c": 2, "n": i})

    b = open_stream(node, connect=url_connect, last_event_id=last)
    for i in range(9, 11):
        publish(node, ch1, {"c": 1, "n": i})
        publish(node, ch2, {"c": 2, "n": i})
    publish(node, nh, "after")
    for ch, c in ((ch1, 1), (ch2, 2)):
        got = until_sentinel(node, b, ch)  # offset 11
        assert offsets(got) == list(range(4, 11)), f"{ch}: after resume got {offsets(got)}, want 4..10 once"
        assert [p["data"] for p in got] == [{"c": c, "n": i} for i in range(4, 11)]
    assert [p["data"] for p in until_sentinel(node, b, nh)] == ["after"], "the no-history channel is subscribed again"
    pos = decode_event_id(b.last_id)
    assert pos == {ch1: {"offset": 11, "epoch": epoch1}, ch2: {"offset": 11, "epoch": epoch2}, nh: {}}, pos
    assert event_id_problems(b) == []

    # Positions in Last-Event-ID win over those in `connect`: an old position
    # in the URL must not bring back what the stream already had.
    last_b = b.last_id
    b.close()
    publish(node, ch1, {"c": 1, "n": 11})
    c = open_stream(node, connect={"subs": {ch1: {"offset": 1, "epoch": epoch1}}}, last_event_id=last_b)
    publish(node, ch1, {"c": 1, "n": 12})
    got = until_sentinel(node, c, ch1)
    assert offsets(got) == [12, 13], f"Last-Event-ID (offset 11) must win over connect's offset 1: got {offsets(got)}"
    assert event_id_problems(c) == []


def test_sse_resume_unrecoverable_is_told(node_factory):
    """Last-Event-ID with a position that history no longer covers (trimmed,
    or another epoch): the client is told `recovered: false`, never gets a
    partial list, and continues from the current position."""
    node = node_factory.start(config_text=NS_YAML)
    ch, ch2 = "small:res", "res:epoch"
    a = open_stream(node, connect={"subs": {ch: {}, ch2: {}}})
    publish(node, ch, 1)
    publish(node, ch2, 1)
    a.wait_pubs(ch, 1)
    a.wait_pubs(ch2, 1)
    pos = decode_event_id(a.last_id)
    epoch = pos[ch]["epoch"]
    a.close()
    for i in range(2, 21):
        publish(node, ch, i)  # history keeps 16..20 only
    forged = dict(pos)
    forged[ch2] = {"offset": 1, "epoch": pos[ch2]["epoch"] + "-gone"}
    b = open_stream(node, connect={"subs": {ch: {}, ch2: {}}}, last_event_id=b64url_encode_json(forged))
    subs = b.info.get("subs") or {}
    for c, off in ((ch, 20), (ch2, 1)):
        r = subs.get(c)
        assert r is not None, f"resumed connect result has no subs[{c!r}]: {b.info}"
        assert r.get("recovered") is False and not r.get("publications"), f"{c}: must be told recovered false: {r}"
        assert r.get("offset") == off, r
    publish(node, ch, 21)
    publish(node, ch2, 2)
    got = until_sentinel(node, b, ch)  # offset 22
    assert offsets(got) == [21], f"a partial list or old publications arrived: {offsets(got)}"
    assert offsets(until_sentinel(node, b, ch2)) == [2]  # the sentinel is 3
    assert decode_event_id(b.last_id) == {ch: {"offset": 22, "epoch": epoch}, ch2: {"offset": 3, "epoch": pos[ch2]["epoch"]}}
    assert event_id_problems(b) == []


def test_sse_resume_across_cluster(cluster):
    """Stream on node A, commands POSTed to node B (forwarded through Redis),
    the resumed stream on node B: every publication once, in order."""
    na, nb = cluster.start(2)
    ch = "res:cluster"
    a = open_stream(na)
    post_ok(a, {"id": 2, "subscribe": {"channel": ch}}, node=nb)
    rep = a.wait_reply(2)
    assert "result" in rep, rep
    epoch = rep["result"]["epoch"]
    sent = []  # data in offset order
    post_ok(a, {"id": 3, "publish": {"channel": ch, "data": {"n": 1, "via": "post-B"}}}, node=nb)
    assert a.wait_reply(3)["result"]["offset"] == 1
    sent.append({"n": 1, "via": "post-B"})
    for i, n in enumerate((na, nb, na, nb), start=2):
        d = {"n": i, "via": f"api-{n.name}"}
        assert publish(n, ch, d)["offset"] == i
        sent.append(d)
    post_ok(a, {"id": 4, "publish": {"channel": ch, "data": {"n": 6, "via": "post-A"}}}, node=na)
    assert a.wait_reply(4)["result"]["offset"] == 6
    sent.append({"n": 6, "via": "post-A"})
    a.wait_pubs(ch, 6)
    assert reply_ids(a) == [1, 2, 3, 4]
    last = a.last_id
    assert decode_event_id(last) == {ch: {"offset": 6, "epoch": epoch}}, decode_event_id(last)
    a.close()

    for i in range(7, 12):
        d = {"n": i, "via": f"api-{(na, nb)[i % 2].name}"}
        assert publish((na, nb)[i % 2], ch, d)["offset"] == i
        sent.append(d)

    b = open_stream(nb, last_event_id=last)
    assert b.info["node"] != a.info["node"], f"the resumed stream is on the other node: {a.info} {b.info}"
    post_ok(b, {"id": 2, "publish": {"channel": ch, "data": {"n": 12, "via": "post-A-for-B"}}}, node=na)
    rep = b.wait_reply(2)
    assert rep.get("result", {}).get("offset") == 12, rep
    sent.append({"n": 12, "via": "post-A-for-B"})
    got = until_sentinel(na, b, ch, timeout=15)  # offset 13, published through the other node
    assert offsets(a.pubs(ch)) == list(range(1, 7))
    assert [p["data"] for p in a.pubs(ch)] == sent[:6]
    assert offsets(got) == list(range(7, 13)), f"resumed on node B: {offsets(got)}, want 7..12 once"
    assert [p["data"] for p in got] == sent[6:]
    assert reply_ids(b) == [1, 2]
    assert decode_event_id(b.last_id) == {ch: {"offset": 13, "epoch": epoch}}
    assert event_id_problems(a) == [] and event_id_problems(b) == []


def test_sse_resume_after_the_owning_node_died(cluster):
    """The node holding the stream is killed; the client reconnects to
    another node with Last-Event-ID and gets what it missed, once."""
    na, nb = cluster.start(2)
    ch = "res:dead"
    a = open_stream(na, connect={"subs": {ch: {}}})
    for i in range(1, 4):
        publish(nb, ch, {"n": i})
    a.wait_pubs(ch, 3)
    last = a.last_id
    na.signal(signal.SIGKILL)
    assert na.wait_exit(5) is not None
    a.wait_end(timeout=5)
    for i in range(4, 8):
        assert publish(nb, ch, {"n": i})["offset"] == i
    b = open_stream(nb, connect={"subs": {ch: {}}}, last_event_id=last)
    publish(nb, ch, {"n": 8})
    got = until_sentinel(nb, b, ch, timeout=15)
    assert offsets(got) == [4, 5, 6, 7, 8], f"after the owner died: {offsets(got)}"
    assert [p["data"] for p in got] == [{"n": i} for i in range(4, 9)]
    assert event_id_problems(b) == []


def test_sse_subscribe_errors(node_factory):
    node = node_factory.start(token_secret=TOKEN_SECRET, config_text=NS_YAML)
    sec, opn = "secret:sse", "sse:open"
    anon = open_stream(node)
    post_ok(anon, [{"id": 2, "subscribe": {"channel": sec}}, {"id": 3, "subscribe": {"channel": opn}},
                   {"id": 4, "subscribe": {"channel": opn}}, {"id": 5, "subscribe": {"channel": "x" * 300}}])
    anon.wait_reply(5)
    assert anon.wait_reply(2).get("error", {}).get("code") == 103, anon.wait_reply(2)
    assert "result" in anon.wait_reply(3)
    assert anon.wait_reply(4).get("error", {}).get("code") == 105, anon.wait_reply(4)
    assert anon.wait_reply(5).get("error", {}).get("code") == 107, anon.wait_reply(5)
    assert set(decode_event_id(anon.last_id)) == {opn}, f"ids hold only real subscriptions: {anon.last_id}"
    user = open_stream(node, connect={"token": user_token(TOKEN_SECRET, "dora"), "subs": {sec: {}}}, post=True)
    post_ok(user, {"id": 2, "publish": {"channel": sec, "data": "client publish"}})
    assert user.wait_reply(2).get("error", {}).get("code") == 103, "publish:false"
    publish(node, sec, "from api")
    publish(node, opn, "open")
    assert [p["data"] for p in user.wait_pubs(sec, 1)] == ["from api"]
    assert [p["data"] for p in until_sentinel(node, anon, opn)] == ["open"]
    assert anon.pubs(sec) == [], "a refused subscription still delivers"
    assert event_id_problems(anon) == [] and event_id_problems(user) == []


def test_sse_commands_alternating_nodes_keep_order(cluster):
    """A client POSTs one command at a time, alternately to the owning node
    and to another one: the replies come in the order the POSTs were
    accepted, the publications in offset order; refused POSTs on the
    forwarding node run nothing."""
    na, nb = cluster.start(2)
    ch = "ord:alt"
    s = open_stream(na, connect={"subs": {ch: {}}})
    n = 30
    for i in range(n):
        post_ok(s, {"id": 2 + i, "publish": {"channel": ch, "data": {"i": i}}}, node=(na, nb)[i % 2])
        if i == 10:
            flip = "A" if s.session[-1] != "A" else "B"
            r = sse_post(nb, s.session[:-1] + flip, {"id": 99, "publish": {"channel": ch, "data": "evil"}})
            assert r.status_code in (400, 404), f"wrong secret via node B: HTTP {r.status_code} {r.text[:200]}"
            r = sse_post(nb, s.session, b"{bad")
            assert r.status_code == 400, f"bad body via node B: HTTP {r.status_code} {r.text[:200]}"
            r = sse_post(nb, s.session, {"id": 98, "publish": {"channel": ch, "data": "x" * 70000}})
            assert r.status_code == 413, f"oversize via node B: HTTP {r.status_code} {r.text[:200]}"
    s.wait_reply(n + 1, timeout=10)
    ping_sentinel(s, 10_001, node=nb)  # through the forwarding node, the slower path
    assert reply_ids(s) == list(range(1, n + 2)) + [10_001], f"replies out of POST order: {reply_ids(s)}"
    replies = [o for o in s.objs() if isinstance(o, dict) and 2 <= o.get("id", 0) <= n + 1]
    assert [r["result"]["offset"] for r in replies] == list(range(1, n + 1)), "commands ran out of POST order"
    pubs = until_sentinel(na, s, ch, timeout=15)  # offset n + 1
    assert offsets(pubs) == list(range(1, n + 1)) and [p["data"] for p in pubs] == [{"i": i} for i in range(n)]
    assert all(p["info"]["client"] == s.client for p in pubs), "forwarded publishes carry the session's client"

    # Concurrent POSTs through both nodes: each accepted once, each answered once.
    from concurrent.futures import ThreadPoolExecutor
    base = 100
    with ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda k: s.post([{"id": base + 2 * k, "ping": {}},
                                           {"id": base + 2 * k + 1, "publish": {"channel": ch, "data": {"c": k}}}],
                                          node=(na, nb)[k % 2]), range(24)))
    assert [r.status_code for r in rs] == [202] * 24, [(r.status_code, r.text[:80]) for r in rs if r.status_code != 202]
    s.wait_until(lambda: len(reply_ids(s)) >= n + 2 + 48, 10, "48 replies to concurrent POSTs")
    ping_sentinel(s, 10_002, node=na)
    ping_sentinel(s, 10_003, node=nb)
    ids = [i for i in reply_ids(s)[n + 2:] if i < 10_000]
    assert sorted(ids) == list(range(base, base + 48)), f"replies lost or doubled: {sorted(ids)}"
    for k in range(24):  # within one POST: in command order
        assert ids.index(base + 2 * k) < ids.index(base + 2 * k + 1)
    got = until_sentinel(nb, s, ch, timeout=15)
    assert offsets(got) == list(range(1, n + 1)) + list(range(n + 2, n + 26)), offsets(got)
    assert event_id_problems(s) == [] and pub_id_problems(s, ch) == []


def test_sse_api_disconnect_and_unsubscribe(token_node):
    node = token_node
    ch, ch2 = "sse:api", "sse:api2"
    s = open_stream(node, connect={"token": user_token(TOKEN_SECRET, "erin"), "subs": {ch: {}, ch2: {}}}, post=True)
    node.api_result("unsubscribe", {"user": "erin", "channel": ch})
    u = s.wait_obj(lambda o: o.get("channel") == ch and "unsubscribe" in o, what="an unsubscribe push")
    assert u["unsubscribe"]["code"] == 2000, u
    publish(node, ch, "after unsubscribe")
    publish(node, ch2, "still subscribed")
    assert [p["data"] for p in until_sentinel(node, s, ch2)] == ["still subscribed"]
    assert s.pubs(ch) == [], "a publication after the API unsubscribe arrived"
    assert set(decode_event_id(s.last_id)) == {ch2}, decode_event_id(s.last_id)

    other = open_stream(node, connect={"subs": {ch2: {}}})
    node.api_result("disconnect", {"client": s.client})
    s.wait_end(timeout=5)
    d = [o["disconnect"] for o in s.objs() if isinstance(o, dict) and "disconnect" in o]
    assert d and d[-1]["code"] == 3502 and d[-1].get("reconnect") is not True, f"disconnect events {d}"
    assert "disconnect" in s.objs()[-1], "the disconnect event is the last one"
    r = sse_post(node, s.session, {"id": 5, "ping": {}})
    assert r.status_code == 404, f"a disconnected session still takes commands: HTTP {r.status_code}"
    # The other session is untouched.
    publish(node, ch2, "for other")
    assert [p["data"] for p in other.wait_pubs(ch2, 1)] == ["for other"]
    assert not other.ended


# --------------------------------------------------------------------------
# ping, disconnect
# --------------------------------------------------------------------------


def test_sse_ping_event(node_factory):
    node = node_factory.start(ping_interval=1, pong_timeout=1)
    s = open_stream(node)
    t0 = s.events[0].t
    assert s.info["ping"] == 1 and s.info["pong"] is False, s.info
    i, e = s.wait_event(lambda e: e.obj == {}, timeout=6, what="a ping event {}")
    assert e.t - t0 < 4.0, f"first ping {e.t - t0:.2f}s after connect (interval 1 s)"
    # No pong can be sent on SSE: the stream stays open and keeps pinging.
    s.wait_until(lambda: sum(1 for e in s.events if e.obj == {}) >= 3, 5, "three pings")
    assert not s.ended, "the stream ended although SSE clients never pong"
    post_ok(s, {"id": 2, "ping": {}})
    assert s.wait_reply(2) == {"id": 2, "result": {}}
    assert event_id_problems(s) == []


def test_sse_bad_token_disconnects(token_node):
    good = user_token(TOKEN_SECRET, "bob")
    cases = [(user_token("wrong-secret", "bob"), 3500), ("not-a-jwt", 3500),
             (good[:-3] + ("AAA" if good[-3:] != "AAA" else "BBB"), 3500),
             (user_token(TOKEN_SECRET, "bob", ttl=-60), 3503)]
    for tok, code in cases:
        s = SSEStream(token_node, connect={"token": tok}, post=True)
        assert s.status == 200, f"bad token: answered {s.status_line}, want 200 with a disconnect event"
        assert s.headers.get("content-type", "").startswith("text/event-stream"), s.headers
        s.wait_end(timeout=5)
        objs = s.objs()
        # An expired token is answered with error 109 first, then the disconnect (3503).
        errors = [o for o in objs[:-1] if o.get("error", {}).get("code") == 109]
        assert objs and "disconnect" in objs[-1] and len(errors) == len(objs) - 1, f"token {tok[:20]}...: events {objs}"
        assert (code == 3503) == bool(errors), f"token {tok[:20]}...: events {objs}"
        d = objs[-1]["disconnect"]
        assert d.get("code") == code, f"token {tok[:20]}...: disconnect {d}, want code {code}"
        assert d.get("reconnect") is not True, d
        s.close()
    # The same node takes a good token.
    s = open_stream(token_node, connect={"token": good}, post=True)
    assert s.info.get("user") == "bob"


def test_sse_drain(node_factory):
    drain = 4
    node = node_factory.start(drain_seconds=drain)
    ch = "sse:drain"
    s = open_stream(node, connect={"subs": {ch: {}}})
    t0 = time.monotonic()
    node.signal(signal.SIGTERM)
    deadline = t0 + 1.5
    while node.http("GET", "/readyz", 1.0).status_code != 503:
        assert time.monotonic() < deadline, "/readyz did not turn 503"
        time.sleep(0.05)
    late = SSEStream(node, connect={})
    assert late.status == 503, f"a new stream while draining: {late.status_line}"
    assert "retry-after" in late.headers, f"503 without Retry-After: {late.headers}"
    s.wait_end(timeout=drain + 2)
    objs = s.objs()
    disc = [o for o in objs if isinstance(o, dict) and "disconnect" in o]
    assert disc, f"no disconnect event before the end of the stream: {objs[-3:]}"
    assert objs[-1] is disc[-1], f"events after the disconnect: {objs[-3:]}"
    assert disc[0]["disconnect"]["code"] == 3001 and disc[0]["disconnect"].get("reconnect") is True, disc
    assert time.monotonic() - t0 < drain + 1.5
    assert node.wait_exit(5) == 0


# --------------------------------------------------------------------------
# bad POSTs
# --------------------------------------------------------------------------


def test_sse_bad_session_ids(node):
    ch, evil = "sse:sess", "sse:evil"
    s = open_stream(node, connect={"subs": {ch: {}}})
    sess, client = s.session, s.client
    evil_cmd = {"id": 90, "publish": {"channel": evil, "data": "must not run"}}

    r = sse_post(node, None, evil_cmd)
    assert r.status_code == 400, f"no session: HTTP {r.status_code} {r.text[:200]}"
    assert error_body(r)["code"] == 107
    r = sse_post(node, "", evil_cmd)
    assert r.status_code == 400, f"empty session: HTTP {r.status_code} {r.text[:200]}"
    assert error_body(r)["code"] == 107
    for bad in ("garbage", "!!", "x" * 400, "a.b.c.d", "\u00e9t\u00e9", "../" + sess):
        r = sse_post(node, bad, evil_cmd)
        assert r.status_code in (400, 404), f"session {bad!r:.40}: HTTP {r.status_code} {r.text[:200]}"
        assert error_body(r)["code"] == 107

    # Right client id, wrong secret; the public client id alone.
    flip = "A" if sess[-1] != "A" else "B"
    wrong = [sess[:-1] + flip, sess + "0", sess[:-1], client, client + "."]
    if "." in sess:
        cid, secret = sess.rsplit(".", 1)
        wrong.append(cid + "." + "0" * len(secret))
    for w in wrong:
        r = sse_post(node, w, evil_cmd)
        assert r.status_code in (400, 404), f"session {w!r} (wrong secret): HTTP {r.status_code} {r.text[:200]}"
        err = error_body(r)
        assert err["code"] == 107, err
    assert history_offsets(node, evil) == [], "a command with a wrong session id ran"

    # A session that ended: 404 unknown session (the node may need a moment to see the close).
    old = open_stream(node)
    old_session = old.session
    old.close()
    deadline = time.monotonic() + 5
    while True:
        r = sse_post(node, old_session, {"id": 2, "ping": {}})
        if r.status_code == 404:
            break
        assert r.status_code == 202, f"ended session: HTTP {r.status_code} {r.text[:200]}"
        assert time.monotonic() < deadline, "a closed stream's session still accepts commands after 5 s"
        time.sleep(0.2)
    err = error_body(r)
    assert err["code"] == 107 and err["message"] == "unknown session", err

    # The real session was never touched and still works.
    post_ok(s, {"id": 2, "publish": {"channel": ch, "data": "ok"}})
    assert s.wait_reply(2)["result"]["offset"] == 1
    assert [p["data"] for p in s.wait_pubs(ch, 1)] == ["ok"]
    assert reply_ids(s) == [1, 2], f"replies to refused POSTs reached the stream: {reply_ids(s)}"


def test_sse_malformed_bodies_keep_session(node):
    ch = "sse:malformed"
    s = open_stream(node, connect={"subs": {ch: {}}})
    good_line = json.dumps({"id": 3, "publish": {"channel": ch, "data": "half of a bad body"}})
    bad_bodies = [
        b"not json",
        b"[1, 2]",
        json.dumps([{"id": 3, "publish": {"channel": ch, "data": "in an array"}}]).encode(),
        json.dumps({"publish": {"channel": ch, "data": "no id"}}).encode(),
        json.dumps({"id": 4, "connect": {}}).encode(),
        b"42",
        b"null",
        b'"text"',
        b'{"id": 5, "publish": {"channel": "' + ch.encode() + b'", "data": 1}',  # truncated
        (good_line + "\nnot json").encode(),        # a good command, then a bad line
        (good_line + "\n[1]").encode(),
        ("not json\n" + good_line).encode(),
        b"\xff\xfe{}",                              # not UTF-8
    ]
    for body in bad_bodies:
        r = sse_post(node, s.session, body)
        assert r.status_code == 400, f"body {body[:60]!r}: HTTP {r.status_code} {r.text[:200]}"
        assert error_body(r)["code"] == 107, r.text
    assert not s.ended, "a bad POST ended the session"

    # The session keeps working; an unknown method is a command like any other.
    # The session runs commands in order, so what follows is the sentinel:
    # had a refused body run anything, it would show before these replies.
    post_ok(s, [{"id": 6, "publish": {"channel": ch, "data": "good"}}, {"id": 7, "nope": {}}])
    assert s.wait_reply(6)["result"]["offset"] == 1, "the first publication that ran gets offset 1"
    assert s.wait_reply(7)["error"]["code"] == 104
    assert [p["data"] for p in s.wait_pubs(ch, 1)] == ["good"]
    assert history_offsets(node, ch) == [1], "a command of a refused body ran"
    assert reply_ids(s) == [1, 6, 7], f"refused bodies got replies on the stream: {s.objs()}"


def test_sse_oversize_post(node):
    ch = "sse:big"
    s = open_stream(node, connect={"subs": {ch: {}}})
    big = {"id": 2, "publish": {"channel": ch, "data": "x" * 70000}}
    r = sse_post(node, s.session, big)
    assert r.status_code == 413, f"a 70 KB body: HTTP {r.status_code} {r.text[:200]}"
    halves = [{"id": 3, "publish": {"channel": ch, "data": "y" * 40000}},
              {"id": 4, "publish": {"channel": ch, "data": "z" * 40000}}]
    r = sse_post(node, s.session, halves)
    assert r.status_code == 413, f"two 40 KB commands in one body: HTTP {r.status_code} {r.text[:200]}"
    assert not s.ended
    # A large body under the limit is fine, and the session works. Commands
    # run in order: had an oversize body run anything, this would not be offset 1.
    post_ok(s, {"id": 5, "publish": {"channel": ch, "data": "w" * 50000}})
    assert s.wait_reply(5)["result"]["offset"] == 1, "a command of an oversize body ran"
    post_ok(s, {"id": 6, "publish": {"channel": ch, "data": "small"}})
    assert s.wait_reply(6)["result"]["offset"] == 2
    pubs = s.wait_pubs(ch, 2)
    assert [p["data"] for p in pubs] == ["w" * 50000, "small"]
    assert reply_ids(s) == [1, 5, 6], f"an oversize body got a reply: {reply_ids(s)}"
    assert history_offsets(node, ch) == [1, 2]
    assert event_id_problems(s) == []


def test_sse_post_for_a_dead_node(cluster):
    na, nb = cluster.start(2)
    a = open_stream(na)
    post_ok(a, {"id": 2, "ping": {}}, node=nb)  # forwarding works while A lives
    assert a.wait_reply(2) == {"id": 2, "result": {}}
    na.signal(signal.SIGKILL)
    assert na.wait_exit(5) is not None
    for attempt in range(2):
        t = time.monotonic()
        try:
            r = sse_post(nb, a.session, {"id": 3 + attempt, "ping": {}}, timeout=15)
        except requests.Timeout:
            raise AssertionError("POST for a session on a dead node hung for 15 s")
        took = time.monotonic() - t
        assert r.status_code in (404, 503), f"dead owner: HTTP {r.status_code} {r.text[:200]}"
        assert took < 7, f"dead owner: answered after {took:.1f}s"
        if r.status_code == 404:
            assert error_body(r)["code"] == 107
    # Node B itself is fine.
    b = open_stream(nb)
    post_ok(b, {"id": 2, "ping": {}})
    assert b.wait_reply(2) == {"id": 2, "result": {}}


# --------------------------------------------------------------------------
# isolation between sessions, slow consumers, node health
# --------------------------------------------------------------------------


def test_sse_bad_input_does_not_hurt_other_sessions(node):
    ch = "sse:iso"
    victim = open_stream(node, connect={"subs": {ch: {}}})
    other = open_stream(node, connect={"subs": {ch: {}}})
    n_pubs = 120
    published: list[int] = []
    errors: list[str] = []

    def publisher():
        try:
            for i in range(1, n_pubs + 1):
                published.append(publish(node, ch, {"n": i})["offset"])
                time.sleep(0.005)
        except Exception as e:  # surfaced below
            errors.append(repr(e))

    t = threading.Thread(target=publisher, daemon=True)
    t.start()
    statuses = []
    flip = "A" if other.session[-1] != "A" else "B"
    for k in range(15):
        statuses.append(sse_post(node, victim.session, {"id": 100 + k, "publish": {"channel": ch,
                                                                                     "data": "x" * 70000}}).status_code)
        statuses.append(sse_post(node, victim.session, b"{broken").status_code)
        statuses.append(sse_post(node, victim.session, {"id": 1, "connect": {}}).status_code)
        statuses.append(sse_post(node, other.session[:-1] + flip, {"id": 200 + k, "unsubscribe": {"channel": ch}})
                        .status_code)
    t.join(30)
    assert not t.is_alive() and not errors, f"publisher: {errors}"
    kinds = [statuses[i::4] for i in range(4)]
    assert set(kinds[0]) == {413}, f"oversize POSTs: {kinds[0]}"
    assert set(kinds[1]) == {400}, f"malformed POSTs: {kinds[1]}"
    assert set(kinds[2]) == {400}, f"connect POSTs: {kinds[2]}"
    assert set(kinds[3]) <= {400, 404}, f"wrong-secret POSTs: {kinds[3]}"
    assert published == list(range(1, n_pubs + 1))
    for s in (victim, other):
        pubs = s.wait_pubs(ch, n_pubs, timeout=10)
        assert offsets(pubs) == published, f"a session lost/doubled publications: {offsets(pubs)[:20]}"
        assert event_id_problems(s) == [] and pub_id_problems(s, ch) == [], "one publication per event, own id"
        assert not s.ended
        assert reply_ids(s) == [1], f"refused POSTs answered on the stream: {reply_ids(s)}"
    post_ok(other, {"id": 2, "ping": {}})
    post_ok(victim, {"id": 2, "ping": {}})
    assert other.wait_reply(2) == {"id": 2, "result": {}} and victim.wait_reply(2) == {"id": 2, "result": {}}


def test_sse_slow_consumer_is_cut_off(node_factory):
    node = node_factory.start("--outbound-limit", "65536")
    ch = "sse:firehose"
    payload = "z" * 16000
    slow = SSEStream(node, connect={"subs": {ch: {}}}, rcvbuf=4096)
    assert slow.status == 200, slow.status_line
    slow.wait_connected()
    slow.pause()  # from now on it reads nothing
    healthy = open_stream(node, connect={"subs": {ch: {}}})
    stats = node.api_result("presenceStats", {"channel": ch})
    assert stats["clients"] == 2, f"SSE sessions count in presence: {stats}"
    published = 0

    def pub(n):
        nonlocal published
        for _ in range(n):
            published += 1
            assert publish(node, ch, {"n": published, "pad": payload})["offset"] == published

    def slow_gone(timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.api_result("presenceStats", {"channel": ch})["clients"] == 1:
                return True
            time.sleep(0.1)
        return False

    pub(300)  # ~4.8 MB against a 64 KB outbound limit
    gone = slow_gone(5)
    while not gone and published < 1000:
        pub(100)
        gone = slow_gone(1)
    assert gone, f"slow SSE consumer still subscribed after {published} x 16 KB publications"
    pubs = healthy.wait_pubs(ch, published, timeout=30)
    assert offsets(pubs) == list(range(1, published + 1)), "the healthy session lost/reordered publications"
    assert all(p["data"]["pad"] == payload for p in pubs)
    assert event_id_problems(healthy) == [] and pub_id_problems(healthy, ch) == []
    assert not healthy.ended

    slow.resume()
    slow.wait_end(timeout=15)
    got = slow.pubs(ch)
    assert len(got) < published, "the slow session was not cut off: it got every publication"
    assert offsets(got) == list(range(1, len(got) + 1)), "what the slow session got has a hole"
    disc = [o["disconnect"] for o in slow.objs() if isinstance(o, dict) and "disconnect" in o]
    if disc:
        assert disc[-1]["code"] == 3004, disc
    r = sse_post(node, slow.session, {"id": 2, "ping": {}})
    assert r.status_code == 404, f"the cut-off session still takes commands: HTTP {r.status_code}"
    assert node.http("GET", "/healthz").status_code == 200


def test_sse_many_bad_requests_keep_node_healthy(node):
    async def main():
        async with SteadyTraffic(node) as steady:
            s = await asyncio.to_thread(open_stream, node, {"subs": {"sse:h": {}}})

            def abuse():
                codes = []
                for i in range(40):
                    codes.append(sse_post(node, "bogus-%d" % i, b"{}").status_code)
                    codes.append(sse_post(node, s.session, b"][").status_code)
                    codes.append(sse_post(node, s.session, b"a" * 70000).status_code)
                    codes.append(sse_post(node, None, b'{"id":1,"ping":{}}').status_code)
                    bad = SSEStream(node, connect="{not json" if i % 2 else '{"subs": 5}')
                    codes.append(bad.status)
                    bad.close()
                    bad = SSEStream(node, connect={}, last_event_id=("!!not-an-id" if i % 2 else "WzEsMl0"))
                    codes.append(bad.status)
                    bad.close()
                return codes

            codes = await asyncio.to_thread(abuse)
            assert all(400 <= c < 500 or c == 200 for c in codes), f"server errors among {sorted(set(codes))}"
            await steady.check()
            r = await asyncio.to_thread(node.http, "GET", "/healthz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            ws = await connect(node)
            await ws.subscribe("sse:h")
            await asyncio.to_thread(post_ok, s, {"id": 2, "publish": {"channel": "sse:h", "data": "still here"}})
            assert (await ws.wait_pub("sse:h"))["data"] == "still here"
            assert (await asyncio.to_thread(s.wait_pubs, "sse:h", 1))[0]["data"] == "still here"

    run(main(), timeout=120)
