"""`POST /sse`: the SSE stream opened with the connect params (token
included) as a JSON body, so that a token never travels in a URL, where
proxies and access logs keep it (docs/transports.md, docs/security.md).
`GET /sse?connect=...` with a token is refused 400 before the token is looked
at, and the token shows in none of the node's output, at trace level.

Real binary, plain sockets for the stream; every wait is bounded."""

from __future__ import annotations

import json
import socket
import urllib.parse

import pytest
import requests

from sbclient import TOKEN_SECRET, SSEStream, close_all_sse, decode_event_id, user_token
from test_sse import SENTINEL, delivered, event_id_problems, offsets, open_stream, publish, until_sentinel


@pytest.fixture(autouse=True)
def _close_streams():
    yield
    close_all_sse()


@pytest.fixture
def trace_token_node(node_factory):
    """A node that verifies tokens and logs everything (trace)."""
    return node_factory.start(token_secret=TOKEN_SECRET, node_name="e2e-sse-post", log_level="trace")


def raw_request(node, request: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send `request` on a fresh socket; the status and what came back before
    the node closed or `timeout` passed (bounded: 1 MB)."""
    with socket.create_connection((node.host, node.port), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        while b"\r\n\r\n" not in out or len(out) < 1 << 20:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
            head, _, body = out.partition(b"\r\n\r\n")
            length = [int(l.split(b":", 1)[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if length and len(body) >= length[0]:
                break
    return int(out.split(b" ", 2)[1]), out


def test_post_with_token_streams_and_resumes_with_last_event_id(trace_token_node):
    node = trace_token_node
    ch = "ssepost:resume"
    tok = user_token(TOKEN_SECRET, "alice")
    s = open_stream(node, connect={"token": tok, "name": "e2e", "subs": {ch: {}}}, post=True)
    assert s.info.get("user") == "alice", s.info
    assert s.session, s.info
    first = [publish(node, ch, {"n": i}) for i in range(3)]
    got = until_sentinel(node, s, ch)
    assert [p["data"] for p in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
    last_id = s.last_id
    assert decode_event_id(last_id)[ch]["offset"] == first[-1]["offset"] + 1  # the sentinel
    s.close()

    # Missed while away: recovered from Last-Event-ID alone (connect names no position), exactly once.
    publish(node, ch, {"n": 3})
    publish(node, ch, {"n": 4})
    again = open_stream(node, connect={"token": tok, "subs": {ch: {}}}, post=True, last_event_id=last_id)
    assert again.info.get("user") == "alice"
    sub = (again.info.get("subs") or {}).get(ch) or {}
    assert sub.get("recovered") is True, again.info
    got = until_sentinel(node, again, ch)
    assert [p["data"] for p in got] == [{"n": 3}, {"n": 4}], offsets(got)
    assert event_id_problems(again) == []

    # The same through a `lastEventId` member of the body.
    resume = again.last_id
    again.close()
    publish(node, ch, {"n": 5})
    third = open_stream(node, connect={"token": tok, "subs": {ch: {}}, "lastEventId": resume}, post=True)
    got = until_sentinel(node, third, ch)
    assert [p["data"] for p in got] == [{"n": 5}], offsets(got)
    assert all(p.get("data") != SENTINEL for p in got)


def test_post_with_bad_token_disconnects_like_get_did(trace_token_node):
    s = SSEStream(trace_token_node, connect={"token": user_token("wrong-secret", "bob")}, post=True)
    assert s.status == 200, s.status_line
    s.wait_end(timeout=5)
    objs = s.objs()
    assert objs and objs[-1].get("disconnect", {}).get("code") == 3500, objs


def test_token_in_get_url_refused_and_never_logged(trace_token_node):
    node = trace_token_node
    tok = user_token(TOKEN_SECRET, "mallory")
    connect = json.dumps({"token": tok, "subs": {"ssepost:x": {}}})
    s = SSEStream(node, connect=connect)
    assert s.status == 400, f"a token in the URL: {s.status_line}"
    err = s.json_body()["error"]
    assert err["code"] == 107 and "POST /sse" in err["message"], err
    assert tok not in s.body.decode("utf-8", "replace")
    # A token in a GET of the requests library too (encoded differently), and a bad one.
    r = requests.get(f"{node.http_url}/sse", params={"connect": json.dumps({"token": "not.a.jwt-secretish"})},
                     headers={"Accept": "text/event-stream"}, timeout=5)
    assert r.status_code == 400, r.text
    # An anonymous GET still streams (plain EventSource), and the node is fine.
    anon = open_stream(node, connect={"subs": {"ssepost:anon": {}}})
    assert anon.info.get("user", "") == ""
    # A good POST with the token: its `sub` may be logged, never the token.
    ok = open_stream(node, connect={"token": tok}, post=True)
    assert ok.info.get("user") == "mallory"
    ok.close()
    anon.close()
    metrics = requests.get(f"{node.http_url}/metrics", timeout=5).text
    output = [node.log_tail(100_000), "\n".join(node.stdout_lines), metrics]
    assert any(line for line in node.log_tail(100_000).splitlines()), "no log at trace level: the check would prove nothing"
    for text in output:
        for needle in (tok, urllib.parse.quote(tok, safe=""), "not.a.jwt-secretish", tok.split(".")[2]):
            assert needle not in text, f"{needle[:16]}... appears in the node's output"


def test_post_body_limits_and_errors(node_factory):
    node = node_factory.start()
    big = json.dumps({"name": "x" * 70_000}).encode()
    status, _ = raw_request(node, b"POST /sse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            + f"Content-Length: {len(big)}\r\n\r\n".encode() + big)
    assert status == 413
    for body, what in [(b'{"subs": nope', "malformed"), (b"[1]", "not an object"),
                       (b'{"id": 2, "ping": {}}', "a command without ?session=")]:
        r = requests.post(f"{node.http_url}/sse", data=body, headers={"Content-Type": "application/json"}, timeout=5)
        assert r.status_code == 400, f"{what}: {r.status_code} {r.text}"
        assert r.json()["error"]["code"] == 107, r.text
    # Anonymous POST with an empty body streams.
    s = open_stream(node, connect="", post=True)
    assert s.session
