"""clients/js/switchboard.js in Chromium against real nodes, the cases of
issue 15 that need a real node: an epoch change under a connected
subscriber (2500, a resubscribe, `unrecovered`), a token that expires while
connected (3503, then `getToken()` and a new connection), and the climb
back to WebSocket after a fallback.

Every wait is for a condition with a bound; "nothing else arrived" is
checked with a sentinel publication made after everything else."""

from __future__ import annotations

import subprocess
import time

import pytest

from sbclient import OPEN_PERMISSIONS_YAML, TOKEN_SECRET, user_token
from test_browser_client import TRANSPORTS, call, client_page, publish, rec, wait_state

REMAKE_JS = """
// A new window.t with the options given (functions by name from window), and follow() on it.
const opts = Object.assign({minReconnectDelay: 50, maxReconnectDelay: 200}, arguments[0]);
if (typeof opts.getToken === 'string') opts.getToken = window[opts.getToken];
if (opts.gateWebSocket) {
  // WebSocket through a gate: while window.blockWs, every attempt goes to a closed port (a real
  // network failure); then to the node again.
  delete opts.gateWebSocket;
  window.blockWs = true;
  const Real = window.WebSocket;
  opts.env = {WebSocket: function (url, protocols) { return new Real(window.blockWs ? 'ws://127.0.0.1:9/ws' : url, protocols); }};
}
window.t.close();
const t = new window.t.constructor(location.origin, opts);
window.t = t;
t.on('state', s => { rec.states.push(s.state); rec.transports.push(s.transport); });
t.on('disconnected', d => rec.disconnected.push([d.code, d.reconnect]));
window.follow = (ch, o) => {
  rec.pubs[ch] = []; rec.subEvents[ch] = [];
  const s = t.subscribe(ch, o);
  s.on('publication', p => rec.pubs[ch].push(p.data));
  for (const ev of ['subscribing', 'subscribed', 'unsubscribed', 'error'])
    s.on(ev, x => rec.subEvents[ch].push(ev + (x && x.code !== undefined ? ':' + x.code : '')));
  return s;
};
"""

RECORD_UNRECOVERED_JS = """
window.rec.unrecovered = [];
const s = window.follow(arguments[0]);
s.on('unrecovered', u => window.rec.unrecovered.push([u.offset, u.epoch]));
"""


def redis_del(redis, *keys: str) -> int:
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(redis.port), "DEL", *keys],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip() or 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_epoch_change_under_a_connected_subscriber(transport, redis_server, node_factory, proxies, browsers):
    """With Redis, a channel's epoch changes when Redis loses its data (a restart without
    persistence: a new run id). The node's subscriber link comes back, finds that history no longer
    holds what it delivered and tells its subscribers with 2500; the client resubscribes from its
    position on the same connection and learns `recovered: false` (`unrecovered`). Over
    long-polling the next poll's position says so."""
    node = node_factory.start(broker=redis_server.url)
    page, _ = client_page(browsers, node_factory, proxies, transport, origin=proxies.origin([node]))
    ch = "bt:epoch"
    page.js(RECORD_UNRECOVERED_JS, ch)
    page.js("window.t.connect()")
    page.wait(lambda: "subscribed" in rec(page)["subEvents"][ch], 20, "subscribed")
    first = publish(node, ch, "one")
    page.wait(lambda: rec(page)["pubs"][ch] == ["one"], 15, "the first publication")
    client = page.js("return window.t.connectResult.client")

    redis_server.kill()
    redis_server.restart()  # empty, with a new run id: every channel starts a new epoch
    second = None
    deadline = time.monotonic() + 20  # the node's link to Redis comes back with a backoff
    while second is None and time.monotonic() < deadline:
        r = node.api("publish", {"channel": ch, "data": "two"})
        if r.status_code == 200 and "result" in r.json():
            second = r.json()["result"]
        else:
            time.sleep(0.2)  # the retry interval of a bounded wait
    assert second is not None, "no publish succeeded after Redis came back"
    assert second["epoch"] != first["epoch"] and second["offset"] == 1, (first, second)
    page.wait(lambda: rec(page)["unrecovered"], 30, "unrecovered")
    r = rec(page)
    assert page.js("return window.t.getSubscription(arguments[0]).unrecovered", ch) is True
    if transport != "longpoll":
        assert "subscribing:2500" in r["subEvents"][ch], f"no 2500 before the resubscribe: {r['subEvents'][ch]}"
        after = r["subEvents"][ch][r["subEvents"][ch].index("subscribing:2500"):]
        assert "subscribed" in after, f"not subscribed again after 2500: {r['subEvents'][ch]}"
        assert page.js("return window.t.connectResult.client") == client, "the connection was remade"
    assert r["states"].count("connecting") == 1, f"reconnected instead of resubscribing: {r['states']}"

    # It goes on in the new epoch: a sentinel arrives, after anything that was going to.
    publish(node, ch, "sentinel")
    page.wait(lambda: "sentinel" in rec(page)["pubs"][ch], 15, "the sentinel")
    pubs = rec(page)["pubs"][ch]
    assert pubs[0] == "one" and pubs[-1] == "sentinel" and len(pubs) == len(set(pubs)), pubs
    pos = page.js("return window.t.getSubscription(arguments[0]).position", ch)
    assert pos["epoch"] == second["epoch"] and pos["offset"] == 2, pos


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_token_expiring_while_connected_asks_get_token(transport, node_factory, proxies, browsers):
    """A connection token that expires while the connection is up. Over WebSocket and SSE the
    connect result says `expires`/`ttl`, so the client asks `getToken()` before the expiry and sends
    `refresh`: the connection outlives the old token's expiry + grace in place. Over long-polling
    (no session) the next poll after the expiry is answered 401 / error 109, and the client asks
    `getToken()` and goes on with the new token. Either way nothing is lost or doubled."""
    # Every namespace flag on (a token key means default deny) and a 1 s refresh grace (default 25 s).
    grace = 1
    node = node_factory.start("--token-secret", TOKEN_SECRET, config_text=OPEN_PERMISSIONS_YAML + f"tokens:\n  refreshGrace: {grace}\n")
    proxy = proxies.start([node])  # HAProxy logs every request line: no token may be in one
    page, _ = client_page(browsers, node_factory, proxies, None, origin=proxy.url)
    expires_at = int(time.time() + 6)
    short = user_token(TOKEN_SECRET, "tess", ttl=expires_at - time.time())
    long = user_token(TOKEN_SECRET, "tess", ttl=3600)
    page.js("""
        const tokens = arguments[0];
        window.rec.tokenCalls = 0;
        window.nextToken = () => { window.rec.tokenCalls++; return Promise.resolve(tokens.length > 1 ? tokens.shift() : tokens[0]); };
    """, [short, long])
    page.js(REMAKE_JS, {"transports": [transport], "getToken": "nextToken"})
    ch = "bt:tok"
    page.js("window.follow(arguments[0]); window.t.connect()", ch)
    page.wait(lambda: "subscribed" in rec(page)["subEvents"][ch], 20, "subscribed")
    assert rec(page)["tokenCalls"] == 1, "getToken() asked more than once for the first connection"
    if transport != "longpoll":  # long-polling has no session, so no connect result from the node
        result = page.js("return window.t.connectResult")
        assert result["user"] == "tess" and result.get("expires") is True and 0 <= result.get("ttl", -1) <= 6, result
    publish(node, ch, "before")
    page.wait(lambda: rec(page)["pubs"][ch] == ["before"], 15, "the first publication")
    disconnects_before = list(rec(page)["disconnected"])  # (a remade client's own close is in here)

    page.wait(lambda: rec(page)["tokenCalls"] >= 2, 30, "getToken() asked again before or after the expiry: "
              + str({k: rec(page)[k] for k in ("states", "disconnected", "tokenCalls")}))
    if transport != "longpoll":
        # Past the old token's expiry + grace (+ a sweep): a refreshed connection is still the same one.
        page.wait(lambda: time.time() > expires_at + grace + 2, 20, "the old token's expiry + grace")
        r = rec(page)
        assert r["disconnected"] == disconnects_before, f"refreshed in place, yet disconnected: {r['disconnected']}"
    wait_state(page, "connected", 20)
    publish(node, ch, "after")
    publish(node, ch, "sentinel")
    page.wait(lambda: "sentinel" in rec(page)["pubs"][ch], 20, "the sentinel")
    assert rec(page)["pubs"][ch] == ["before", "after", "sentinel"], rec(page)["pubs"]
    assert "ok" in call(page, "window.t.publish('bt:tok', 'from the page')"), "the connection works"
    assert page.js("return window.t.state") == "connected"
    # The tokens travelled in bodies (SSE: POST /sse with the connect params, which the node
    # requires for a token; long-polling: the poll body), never in a URL, where proxy and access
    # logs keep them. (HAProxy logs a request when it ends: the open stream itself is not logged
    # yet, its command POSTs are.)
    logged = proxy.requests()
    assert logged, "HAProxy logged no request: the check below would prove nothing"
    for token in (short, long):
        leaks = [r["path"] for r in logged if token in r["path"] or token[-20:] in r["path"]]
        assert not leaks, f"a token in a logged URL: {leaks[:3]}"
    if transport == "sse":
        assert any(r["method"] == "POST" and r["path"].startswith("/sse?session=") for r in logged), logged
        assert not any(r["path"].startswith("/sse?connect=") for r in logged), logged


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_subscription_token_channel_on_every_transport(transport, node_factory, proxies, browsers):
    """A `$` channel (it needs a subscription token) followed over each transport with a
    subscription `getToken()`, whose first token expires after a few seconds. Over WebSocket and
    SSE the subscribe result says `ttl` and the client sends `subRefresh` in time; over
    long-polling the token travels in each poll's `subs` entry and, once it lapses (error 109 at a
    poll, or 2501 in a held one), the client asks `getToken()` again and polls on from its
    position. Every publication arrives once, in order; no token is in a logged URL."""
    grace = 1
    node = node_factory.start("--token-secret", TOKEN_SECRET, config_text=OPEN_PERMISSIONS_YAML + f"tokens:\n  refreshGrace: {grace}\n")
    proxy = proxies.start([node])
    page, _ = client_page(browsers, node_factory, proxies, None, origin=proxy.url)
    ch = "$bt:priv"
    expires_at = int(time.time() + 5)
    short = user_token(TOKEN_SECRET, "tess", ttl=expires_at - time.time(), channel=ch)
    long = user_token(TOKEN_SECRET, "tess", ttl=3600, channel=ch)
    conn_token = user_token(TOKEN_SECRET, "tess", ttl=3600)
    page.js("""
        const [conn, subTokens] = arguments[0];
        window.rec.subTokenCalls = 0;
        window.connToken = () => Promise.resolve(conn);
        window.subToken = () => { window.rec.subTokenCalls++; return Promise.resolve(subTokens.length > 1 ? subTokens.shift() : subTokens[0]); };
    """, [conn_token, [short, long]])
    page.js(REMAKE_JS, {"transports": [transport], "getToken": "connToken"})
    page.js("window.follow(arguments[0], {getToken: window.subToken}); window.t.connect()", ch)
    page.wait(lambda: "subscribed" in rec(page)["subEvents"][ch], 20, "subscribed: " + str(rec(page)["subEvents"].get(ch)) + str(page.js("const s = window.t.getSubscription(arguments[0]); return [s && s.state, window.rec.subTokenCalls, window.t.state, window.rec.states, window.rec.disconnected]", ch)))
    publish(node, ch, "before")
    page.wait(lambda: rec(page)["pubs"][ch] == ["before"], 15, "the first publication")
    page.wait(lambda: rec(page)["subTokenCalls"] >= 2, 30, "the subscription's getToken() asked again: "
              + str({k: rec(page)[k] for k in ("states", "disconnected", "subTokenCalls")} | {"events": rec(page)["subEvents"][ch]}))
    page.wait(lambda: time.time() > expires_at + grace + 2, 20, "the first token's expiry + grace")
    publish(node, ch, "after")
    publish(node, ch, "sentinel")
    page.wait(lambda: "sentinel" in rec(page)["pubs"][ch], 20, "the sentinel")
    r = rec(page)
    assert r["pubs"][ch] == ["before", "after", "sentinel"], r["pubs"]
    assert "unsubscribed" not in " ".join(r["subEvents"][ch]), r["subEvents"][ch]
    assert page.js("return window.t.getSubscription(arguments[0]).state", ch) == "subscribed"
    assert r["states"].count("connecting") == 1, f"the connection was remade: {r['states']}"
    logged = proxy.requests()
    assert logged, "HAProxy logged no request: the check below would prove nothing"
    for token in (short, long, conn_token):
        leaks = [x["path"] for x in logged if token in x["path"] or token[-20:] in x["path"]]
        assert not leaks, f"a token in a logged URL: {leaks[:3]}"


def test_climbs_back_to_websocket_after_a_fallback(node_factory, proxies, browsers):
    """WebSocket cannot connect (every attempt fails at the network level): the client falls back
    to SSE; once WebSocket works again, the periodic probe (`upgradeInterval`) takes it back to
    WebSocket, and the subscription goes on without a loss or a duplicate."""
    node = node_factory.start()
    page, _ = client_page(browsers, node_factory, proxies, None, origin=proxies.origin([node]))
    page.js(REMAKE_JS, {"upgradeInterval": 1000, "gateWebSocket": True})
    ch = "bt:climb"
    page.js("window.follow(arguments[0]); window.t.connect()", ch)
    page.wait(lambda: "subscribed" in rec(page)["subEvents"][ch], 30, "subscribed")
    assert page.js("return window.t.transport") == "sse", rec(page)["transports"]
    publish(node, ch, "on sse")
    page.wait(lambda: rec(page)["pubs"][ch] == ["on sse"], 15, "a publication over SSE")
    page.js("window.blockWs = false")
    page.wait(lambda: page.js("return window.t.transport === 'websocket' && window.t.state === 'connected'"),
              30, "back on WebSocket")
    page.wait(lambda: rec(page)["subEvents"][ch].count("subscribed") >= 2, 15, "subscribed over WebSocket")
    publish(node, ch, "on websocket")
    publish(node, ch, "sentinel")
    page.wait(lambda: "sentinel" in rec(page)["pubs"][ch], 15, "the sentinel")
    assert rec(page)["pubs"][ch] == ["on sse", "on websocket", "sentinel"], rec(page)["pubs"]
    assert page.js("return window.t.transport") == "websocket"
    assert "longpoll" not in rec(page)["transports"], rec(page)["transports"]
