"""The demo page and clients/js/switchboard.js in a real browser, one node.

- the node serves the repo's client files at `/` and `/switchboard.js`;
- the chat works over each transport forced in turn (`?transport=`): send in
  one browser, see it in the other, once each, in offset order;
- with WebSockets refused (HAProxy answers 403 on /ws, and on /sse too), the
  client falls back by itself and the chat works; it remembers the
  transport that worked;
- a forced disconnect (code 3502) is final: the page does not reconnect.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from browserlib import CLIENT_DIR, PAGE_MODE, BrokenWebSocketServer, CannedHTTPServer, Page, assert_once_in_order, page_url
from sbclient import NodeStartError

TRANSPORTS = ["websocket", "sse", "longpoll"]
CHANNEL = "chat:demo"


def publish(node, text: str, name: str = "api", channel: str = CHANNEL) -> dict:
    return node.api_result("publish", {"channel": channel, "data": {"text": text, "name": name}})


def wait_counter(page: Page, key: str, minimum: float, timeout: float = 10.0) -> str:
    def ok():
        v = page.status()[key]
        try:
            return v if float(v) >= minimum else None
        except (TypeError, ValueError):
            return None
    return page.wait(ok, timeout, f"#{key} >= {minimum}")


def test_node_serves_the_repo_client_files(node_factory):
    if PAGE_MODE == "repo":
        pytest.skip("SB_BROWSER_PAGE=repo: pages come from the repo, not from the node")
    node = node_factory.start()
    for path, name, ctype in (("/switchboard.js", "switchboard.js", "javascript"), ("/", "demo.html", "text/html")):
        r = node.http("GET", path)
        assert r.status_code == 200, f"GET {path}: HTTP {r.status_code}"
        assert ctype in r.headers.get("Content-Type", ""), f"GET {path}: Content-Type {r.headers.get('Content-Type')}"
        with open(os.path.join(CLIENT_DIR, name), "rb") as f:
            want = f.read()
        assert r.content == want, (f"GET {path} is not clients/js/{name} ({len(r.content)} vs {len(want)} bytes): "
                                   "the binary embeds an older copy; rebuild it")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_chat_over_forced_transport(transport, node_factory, proxies, browsers):
    node = node_factory.start()
    origin = proxies.origin([node])
    alice = browsers.open(page_url(origin, transport, name="alice"), "alice")
    bob = browsers.open(page_url(origin, transport, name="bob"), "bob")
    for p in (alice, bob):
        st = p.wait_ready(transport)
        assert p.js("return window.sb.transport") == transport
        if transport != "longpoll" and node.node_id:
            assert st["node"] == node.node_id, f"{p.label}: #node {st['node']!r}, node id {node.node_id!r}"

    alice.send("hello from alice")
    for p in (alice, bob):
        p.wait_texts(["hello from alice"])
    bob.send("hi alice", enter=True)
    for p in (alice, bob):
        p.wait_texts(["hello from alice", "hi alice"], exact=True)

    burst = [f"burst-{i:02d}" for i in range(20)]
    for t in burst:
        publish(node, t)
    expected = ["hello from alice", "hi alice"] + burst
    for p in (alice, bob):
        msgs = p.wait_texts(expected, exact=True)
        assert_once_in_order(msgs, p.label)
    assert alice.messages() == bob.messages(), "the two pages show different offsets"
    # The message with its sender's name is shown as "name: text".
    first = alice.js("return document.querySelector('#messages .msg').textContent")
    assert "alice: hello from alice" in first, first

    wait_counter(alice, "rate", 0.1, timeout=5)
    wait_counter(alice, "nodes", 1, timeout=6)
    if transport != "longpoll":  # long-polling keeps no connection on the node between polls
        wait_counter(alice, "clients", 2, timeout=8)
    else:
        wait_counter(alice, "clients", 0, timeout=6)
    # A sentinel published after everything else: once a page shows it, a late duplicate would show too.
    publish(node, "sentinel")
    for p in (alice, bob):
        p.wait_texts(expected + ["sentinel"], exact=True, timeout=15)
    assert alice.texts() == expected + ["sentinel"] and bob.texts() == expected + ["sentinel"], \
        "a message appeared twice or late"


@pytest.mark.parametrize("deny,expected", [(("/ws",), "sse"), (("/ws", "/sse"), "longpoll")],
                         ids=["ws-refused", "ws-and-sse-refused"])
def test_falls_back_when_websocket_is_refused(deny, expected, node_factory, proxies, browsers):
    node = node_factory.start()
    proxy = proxies.start([node], deny=deny)
    page = browsers.open(page_url(proxy.url, name="carol"), "carol")  # default transports: websocket, sse, longpoll
    page.wait_ready(expected, timeout=30)
    refused = [r for r in proxy.requests() if r["status"] == 403]
    assert any(r["path"].startswith("/ws") for r in refused), f"no refused /ws in the proxy log: {proxy.requests()}"

    page.send("after the fallback")
    page.wait_texts(["after the fallback"])
    publish(node, "from the backend")
    msgs = page.wait_texts(["after the fallback", "from the backend"], exact=True)
    assert_once_in_order(msgs)

    if expected == "sse":
        # The server ends the session with a code that allows a reconnect: the
        # client comes back over SSE straight away, without trying /ws again.
        ws_before = sum(1 for r in proxy.requests() if r["path"].startswith("/ws"))
        client_id = page.js("return window.sb.connectResult.client")
        node.api_result("disconnect", {"client": client_id, "code": 3000, "reason": "test reconnect"})
        page.wait(lambda: page.js("return window.sb.connectResult.client") != client_id, 15,
                  "a new connection (new client id)")
        page.wait_ready("sse", timeout=15)
        publish(node, "after the reconnect")
        page.wait_texts(["after the fallback", "from the backend", "after the reconnect"], exact=True)
        ws_after = sum(1 for r in proxy.requests() if r["path"].startswith("/ws"))
        assert ws_after == ws_before, f"the client tried /ws again ({ws_before} -> {ws_after}) after SSE worked"


def test_falls_back_when_websocket_dies_before_connecting(node_factory, proxies, browsers):
    """/ws accepts the upgrade and closes at once (1011), before any connect
    reply: after two such failures in a row the client moves to SSE."""
    node = node_factory.start()
    broken = BrokenWebSocketServer()
    try:
        proxy = proxies.start([node], routes={"{ path /ws }": broken.port})
        page = browsers.open(page_url(proxy.url, name="gina"), "gina")
        page.wait_ready("sse", timeout=30)
        assert broken.accepted == 2, f"{broken.accepted} WebSocket attempts before falling back (want 2)"
        publish(node, "over sse")
        page.wait_texts(["over sse"], exact=True)
    finally:
        broken.stop()


def test_sse_command_post_404_means_reconnect(node_factory, proxies, browsers):
    """Command POSTs (`POST /sse?session=`) answered 404 (unknown session): the client treats the
    session as gone and opens a new stream. Here every POST gets 404 (the
    page's first presence request comes right after each connect), so it
    keeps doing so, but with a growing backoff, not in a tight loop."""
    node = node_factory.start()
    gone = CannedHTTPServer(404, {"error": {"code": 107, "message": "unknown session"}})
    try:
        proxy = proxies.start([node], routes={"METH_POST { path /sse } { url_param(session) -m found }": gone.port})
        page = browsers.open(page_url(proxy.url, "sse", name="hank"), "hank")
        page.wait(lambda: page.js("return window.sb.connectResult && window.sb.connectResult.client"), 20,
                  "a first SSE connect")
        first = page.js("return window.sb.connectResult.client")
        page.wait(lambda: page.js("return window.sb.connectResult.client") != first, 15,
                  "a new SSE session after a 404")
        assert any("answered 404" in line for line in page.log_lines(20)), page.log_lines(20)
        # Command POSTs name a session; the stream opens (POST /sse, no query) reach the node.
        posts = [r for r in proxy.requests() if r["method"] == "POST" and r["path"].startswith("/sse?")]
        assert posts and all(r["server"] == "r0" and r["status"] == 404 for r in posts), posts
        hits = gone.hits
        time.sleep(8)  # not a synchronisation: the window in which the reconnect rate is measured
        # Backoff 0.5, 1, 2, 4, 8 s... with full jitter: a handful in 8 s, not dozens.
        assert 1 <= gone.hits - hits <= 8, f"{gone.hits - hits} reconnects after a 404 within 8 s"
    finally:
        gone.stop()


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_forced_disconnect_is_final(transport, node_factory, proxies, browsers):
    node = node_factory.start()
    page = browsers.open(page_url(proxies.origin([node]), transport, name="dave"), "dave")
    page.wait_ready(transport)
    client_id = page.js("return window.sb.connectResult.client")
    node.api_result("disconnect", {"client": client_id, "code": 3502, "reason": "banned"})
    page.wait(lambda: page.status()["state"] == "disconnected", 10, "#state disconnected")
    assert page.js("return window.sb.state") == "closed"
    time.sleep(3)  # not a synchronisation: a window longer than the first reconnect delays, it must stay down
    st = page.status()
    assert st["state"] == "disconnected" and page.js("return window.sb.state") == "closed", st
    assert "3502" in " ".join(page.log_lines(10)), page.log_lines(10)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_node_restart_without_history(transport, node_factory, proxies, browsers):
    """One node (memory broker) killed and started again on the same port: the
    client reconnects by itself, finds the channel's history gone (a new
    epoch), says so (`unrecovered`, a line on the page) and goes on with the
    new messages, whose offsets start again at 1."""
    node = node_factory.start(name="node0")
    port = node.port
    origin = proxies.origin([node])
    page = browsers.open(page_url(origin, transport, name="erin"), "erin")
    page.wait_ready(transport)
    before = [f"a-{i}" for i in range(3)]
    for t in before:
        publish(node, t)
    page.wait_texts(before, exact=True)

    node.signal(signal.SIGKILL)
    assert node.wait_exit(5) is not None
    page.wait(lambda: page.status()["state"] != "connected" or transport == "longpoll", 10, "the page to notice")
    again = None
    for _ in range(20):  # the old port may take a moment to be free again
        try:
            again = node_factory.start(name="node0", port=port)
            break
        except NodeStartError:
            time.sleep(0.25)
    assert again is not None, f"could not start a node on port {port} again"
    page.wait(lambda: "could not recover" in " ".join(page.log_lines(15)), 30, "the page to report the lost history")
    page.wait_ready(transport)
    assert page.js("return window.sb.getSubscription(arguments[0]).unrecovered", CHANNEL) is True
    after = [f"b-{i}" for i in range(3)]
    for t in after:
        publish(again, t)
    msgs = page.wait_texts(before + after, exact=True)
    assert [o for o, _ in msgs] == [1, 2, 3, 1, 2, 3], msgs


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_pings_keep_the_connection(transport, node_factory, proxies, browsers):
    """Server pings every second, pong timeout 2 s: over WebSocket the client
    answers each ping (else the node closes with 3006); over SSE no pong is
    expected. Either way the same connection lives on, and the client's own
    watchdog (ping + 5 s) does not fire while pings come."""
    node = node_factory.start("--pong-timeout", "2", ping_interval=1)
    page = browsers.open(page_url(proxies.origin([node]), transport, name="fred"), "fred")
    page.wait_ready(transport)
    res = page.js("return window.sb.connectResult")
    assert res["ping"] == 1 and res["pong"] == (transport == "websocket"), res
    time.sleep(8)  # not a synchronisation: the connection must live through 8 pings (its watchdog is ping + 5 s)
    st = page.status()
    assert st["state"] == "connected", st
    assert page.js("return window.sb.connectResult.client") == res["client"], "the connection was replaced"
    assert not any("closed" in line for line in page.log_lines(10)), page.log_lines(10)
    publish(node, "still here")
    page.wait_texts(["still here"], exact=True)


NO_HISTORY_YAML = """\
# written by IntegrationTests/browser/test_browser_demo.py
namespaces:
  nohist:
    historySize: 0
"""


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_channel_without_history(transport, node_factory, proxies, browsers):
    """A channel that keeps no history has no offsets: the page is subscribed
    at once (long-polling gets no `position` for it) and shows what comes,
    without offsets."""
    node = node_factory.start(config_text=NO_HISTORY_YAML)
    ch = "nohist:room"
    page = browsers.open(page_url(proxies.origin([node]), transport, name="ivy", channel=ch), "ivy")
    t0 = time.monotonic()
    page.wait_ready(transport, timeout=10)
    assert time.monotonic() - t0 < 10
    # Long-polling a channel without history: a publication made while no poll is held (between
    # one answer and the next poll) is kept nowhere, by design. On a loaded machine that gap is
    # wide enough to lose one, so there each text is sent again under a new name until one shows.
    shown: list[str] = []
    for base, by_page in (("one", False), ("two", False), ("three", True)):
        for k in range(4 if transport == "longpoll" else 1):
            t = base if k == 0 else f"{base}#{k}"
            if by_page:
                page.send(t)
            else:
                publish(node, t, channel=ch)
            try:
                page.wait_texts([t], timeout=5 if transport == "longpoll" else 20)
                shown.append(t)
                break
            except AssertionError:
                if transport != "longpoll" or k == 3:
                    raise
    msgs = page.messages()
    assert all(off is None for off, _ in msgs), f"offsets on a channel without history: {msgs}"
    texts = [t for _, t in msgs]
    assert texts[-1] == shown[-1] and len(texts) == len(set(texts)), f"duplicate or out of order: {texts}"
    assert [t for t in texts if t in shown] == shown, texts
