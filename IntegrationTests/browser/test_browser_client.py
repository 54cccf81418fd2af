"""clients/js/switchboard.js driven through its public API in Chromium,
against a real node (issue 15): closing from inside listeners, unsubscribing
while connecting, oversize publishes, offline and back online.

The page is the demo page (for its origin and module); each test makes its
own client there, `window.t`, with short backoff delays, and records what
it sees in `window.rec`. Every wait is for a condition, with a bound; the
checks that something does NOT happen (no reconnect after close()) wait for
a marker the page sets after three times the client's longest backoff.
With SB_BROWSER_PAGE=repo the client comes from clients/js/, else from the
node's binary."""

from __future__ import annotations

import pytest

from browserlib import Page

TRANSPORTS = ["websocket", "sse", "longpoll"]

SETUP_JS = """
const [transport, extra, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
import('/switchboard.js').then(({Switchboard}) => {
  const opts = {minReconnectDelay: 50, maxReconnectDelay: 200, debug: (...a) => console.debug('[t]', ...a)};
  if (transport) opts.transports = [transport];
  Object.assign(opts, extra || {});
  const t = new Switchboard(location.origin, opts);
  window.t = t;
  window.rec = {states: [], transports: [], disconnected: [], errors: [], pubs: {}, subEvents: {}, marks: {}};
  t.on('state', s => { rec.states.push(s.state); rec.transports.push(s.transport); });
  t.on('disconnected', d => rec.disconnected.push([d.code, d.reconnect]));
  t.on('error', e => rec.errors.push(String(e.code)));
  // After three times the longest backoff: a reconnect that was going to happen has happened.
  window.markLater = name => setTimeout(() => { rec.marks[name] = true; }, 600);
  window.follow = (ch, opts) => {
    rec.pubs[ch] = []; rec.subEvents[ch] = [];
    const s = t.subscribe(ch, opts);
    s.on('publication', p => rec.pubs[ch].push(p.data));
    for (const ev of ['subscribing', 'subscribed', 'unsubscribed', 'error'])
      s.on(ev, x => rec.subEvents[ch].push(ev + (x && x.code !== undefined ? ':' + x.code : '')));
    return s;
  };
  done(true);
}).catch(e => done('setup failed: ' + e));
"""


def client_page(browsers, node_factory, proxies, transport: str | None = None, origin: str | None = None,
                options: dict | None = None) -> tuple[Page, object]:
    """The demo page on a new node (or on `origin`), with `window.t` made (transport and options given)."""
    node = None
    if origin is None:
        node = node_factory.start()
        origin = proxies.origin([node])
    page = browsers.open(origin + "/?channel=bt:demo", "client")
    page.wait(lambda: page.js("return !!window.sb"), 20, "the demo page's module")
    page.driver.set_script_timeout(20)
    assert page.driver.execute_async_script(SETUP_JS, transport, options or {}) is True
    return page, node


def rec(page: Page) -> dict:
    return page.js("return window.rec")


def wait_state(page: Page, state: str, timeout: float = 20) -> None:
    page.wait(lambda: page.js("return window.t.state") == state, timeout, f"window.t {state}")


def call(page: Page, expr: str):
    """Run an async expression in the page; returns {"ok": value} or {"err": code, "msg": message}."""
    return page.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"Promise.resolve().then(() => {expr}).then(v => done({{ok: v === undefined ? null : v}}),"
        " e => done({err: String(e && e.code), msg: String(e && e.message)}));")


def publish(node, channel: str, data) -> dict:
    return node.api_result("publish", {"channel": channel, "data": data})


@pytest.mark.parametrize("event", ["state", "disconnected"])
def test_close_from_a_listener_on_disconnect_is_final(event, node_factory, proxies, browsers):
    page, node = client_page(browsers, node_factory, proxies, "websocket")
    page.js("window.t.connect()")
    wait_state(page, "connected")
    client = page.js("return window.t.connectResult.client")
    if event == "state":
        page.js("window.t.on('state', s => { if (s.state === 'disconnected') { window.t.close(); markLater('after'); } })")
    else:
        page.js("window.t.on('disconnected', d => { if (d.reconnect) { window.t.close(); markLater('after'); } })")
    node.api_result("disconnect", {"client": client, "code": 3000})
    page.wait(lambda: rec(page)["marks"].get("after"), 20, "the marker after close()")
    r = rec(page)
    assert page.js("return window.t.state") == "closed", r
    assert r["states"].count("connecting") == 1, f"reconnected after close() from a {event} listener: {r['states']}"


def test_close_from_a_connected_listener(node_factory, proxies, browsers):
    page, node = client_page(browsers, node_factory, proxies, "websocket")
    page.js("window.follow('bt:c'); window.t.on('connected', () => { window.t.close(); markLater('after'); });"
            "window.t.connect()")
    page.wait(lambda: rec(page)["marks"].get("after"), 20, "the marker after close()")
    r = rec(page)
    assert page.js("return window.t.state") == "closed"
    assert "subscribed" not in r["subEvents"]["bt:c"], r["subEvents"]
    assert page.js("return window.t.getSubscription('bt:c').state") != "subscribed"
    assert r["states"].count("connecting") == 1, r["states"]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_unsubscribe_while_connecting(transport, node_factory, proxies, browsers):
    page, node = client_page(browsers, node_factory, proxies, transport)
    page.js("const s = window.follow('bt:u'); window.t.connect(); s.unsubscribe();")
    wait_state(page, "connected")
    # Replies come in order: once a ping is answered, the unsubscribe sent before it was handled.
    assert "ok" in call(page, "window.t.ping()")
    clients = node.api_result("presence", {"channel": "bt:u"})["clients"]
    assert clients == {}, f"the node still has the page subscribed to bt:u: {clients}"
    # Subscribing again works (no 105), and publications arrive once.
    page.js("window.follow('bt:u')")
    page.wait(lambda: "subscribed" in rec(page)["subEvents"]["bt:u"], 10, "subscribed again")
    publish(node, "bt:u", "one")
    publish(node, "bt:u", "sentinel")
    page.wait(lambda: "sentinel" in rec(page)["pubs"]["bt:u"], 10, "the sentinel")
    r = rec(page)
    assert r["pubs"]["bt:u"] == ["one", "sentinel"], r["pubs"]
    assert not any(e.startswith("error") for e in r["subEvents"]["bt:u"]), r["subEvents"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_oversize_publish_is_refused_and_the_client_lives(transport, node_factory, proxies, browsers):
    page, node = client_page(browsers, node_factory, proxies, transport)
    page.js("window.follow('bt:o'); window.t.connect()")
    page.wait(lambda: "subscribed" in rec(page)["subEvents"]["bt:o"], 20, "subscribed")
    client_before = page.js("return window.t.connectResult.client")
    res = call(page, "window.t.publish('bt:o', 'x'.repeat(70000))")
    assert res.get("err") == "too_large", res
    # Queued publishes together over the limit: split into bodies under it, all land.
    res = call(page, "Promise.all([1, 2, 3, 4].map(i => window.t.publish('bt:o', 'y'.repeat(20000) + i)))"
                     ".then(rs => rs.map(r => r.offset))")
    assert "ok" in res and len(res["ok"]) == 4, res
    assert "ok" in call(page, "window.t.publish('bt:o', 'sentinel')")
    page.wait(lambda: "sentinel" in rec(page)["pubs"]["bt:o"], 15, "the sentinel")
    r = rec(page)
    assert len(r["pubs"]["bt:o"]) == 5, [len(p) for p in r["pubs"]["bt:o"]]
    assert page.js("return window.t.state") == "connected"
    assert page.js("return window.t.connectResult.client") == client_before, "the connection was remade"
    assert r["states"].count("connecting") == 1, r["states"]


def test_offline_and_back_online_reconnects_on_websocket(node_factory, proxies, browsers):
    page, node = client_page(browsers, node_factory, proxies)
    page.js("window.follow('bt:n'); window.t.connect()")
    page.wait(lambda: "subscribed" in rec(page)["subEvents"]["bt:n"], 20, "subscribed")
    assert page.js("return window.t.transport") == "websocket"
    publish(node, "bt:n", "before")
    page.wait(lambda: rec(page)["pubs"]["bt:n"] == ["before"], 10, "the first publication")
    drv = page.driver
    drv.set_network_conditions(offline=True, latency=0, download_throughput=-1, upload_throughput=-1)
    try:
        page.wait(lambda: page.js("return navigator.onLine") is False, 10, "navigator.onLine false")
        wait_state(page, "disconnected", 10)
        publish(node, "bt:n", "while offline")
    finally:
        drv.set_network_conditions(offline=False, latency=0, download_throughput=-1, upload_throughput=-1)
    wait_state(page, "connected", 20)
    publish(node, "bt:n", "sentinel")
    page.wait(lambda: "sentinel" in rec(page)["pubs"]["bt:n"], 15, "the sentinel")
    r = rec(page)
    assert r["pubs"]["bt:n"] == ["before", "while offline", "sentinel"], r["pubs"]
    assert set(r["transports"]) == {"websocket"}, f"fell back while offline: {r['transports']}"
    assert page.js("return window.t.transport") == "websocket"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_publish_across_a_reconnect_lands_exactly_once(transport, node_factory, proxies, browsers):
    """Publishes made just before the connection drops (sent or not, answered or not) are resent on
    the next connection with the same idempotency key: each lands exactly once."""
    page, node = client_page(browsers, node_factory, proxies, transport)
    page.js("window.t.connect()")
    wait_state(page, "connected")
    n = 10
    for i in range(n):
        # Publish, then drop the connection in the same tick (the client's own transport object:
        # the only way to cut it between the send and the reply).
        res = call(page, f"""(() => {{
            const p = window.t.publish('bt:x', {{i: {i}}});
            const c = window.t._conn;
            if (c && c.ws) c.ws.close(); else if (c && c.es) c.es.onerror(); else if (c) c._end(0, 'test');
            return p.then(r => r.offset);
        }})()""")
        assert "ok" in res, f"publish {i}: {res}"
    hist = node.api_result("history", {"channel": "bt:x", "limit": 100})
    datas = [p["data"]["i"] for p in hist["publications"]]
    assert sorted(datas) == list(range(n)), f"published {datas}: not each once"
    assert datas == list(range(n)), f"out of order: {datas}"
    r = rec(page)
    assert r["states"].count("connected") >= n, r["states"]
