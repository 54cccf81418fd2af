"""The HTTP server API, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import time

from sbclient import TOKEN_SECRET, connect, run, user_token


def test_health_and_ready(node):
    r = node.http("GET", "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = node.http("GET", "/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_api_auth(node):
    body = {"channel": "auth", "data": 1}
    assert node.api("publish", body, key=None).status_code == 401
    assert node.api("publish", body, key="wrong-" + node.api_key).status_code == 401
    assert node.api("publish", body, key=node.api_key[:-1]).status_code == 401
    r = node.http("POST", "/api/publish", json=body, headers={"Authorization": f"Bearer {node.api_key}"})
    assert r.status_code == 401, "only the `apikey` scheme"
    # Nothing was published by the rejected calls.
    h = node.api_result("history", {"channel": "auth"})
    assert h["publications"] == []
    assert node.api_result("publish", body)["offset"] == 1


def test_api_bad_body_and_unknown_method(node):
    r = node.api("publish", raw_body=b"{not json")
    assert r.status_code == 400
    r = node.api("publish", raw_body=b"[1, 2")
    assert r.status_code == 400
    r = node.api("noSuchMethod", {})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == 104
    # Wrong key beats unknown method? Either way, not a 200.
    assert node.api("noSuchMethod", {}, key="bad").status_code in (401, 404)
    # A valid method with a bad parameter: 200 with an error object.
    err = node.api_error("publish", {"channel": "", "data": 1})
    assert err["code"] == 107
    assert err["temporary"] is False


def test_api_publish_and_broadcast(node):
    async def main():
        a = await connect(node)
        b = await connect(node)
        await a.subscribe("bc:1")
        await b.subscribe("bc:2")
        r = await node.apublish("bc:1", {"x": 1})
        assert r["offset"] == 1 and isinstance(r["epoch"], str)
        res = await node.aapi_result("broadcast", {"channels": ["bc:1", "bc:2"], "data": {"all": True}})
        resp = res["responses"]
        assert len(resp) == 2
        assert resp[0]["result"]["offset"] == 2
        assert resp[1]["result"]["offset"] == 1
        pa = await a.wait_pubs("bc:1", 2)
        pb = await b.wait_pubs("bc:2", 1)
        assert [p["data"] for p in pa] == [{"x": 1}, {"all": True}]
        assert [p["data"] for p in pb] == [{"all": True}]
        # A bad channel among good ones: either that entry fails alone, or the
        # whole broadcast is rejected with 107 and nothing is published.
        r = await asyncio.to_thread(node.api, "broadcast", {"channels": ["bc:1", "x" * 300], "data": 2})
        assert r.status_code == 200
        doc = r.json()
        if "error" in doc:
            assert doc["error"]["code"] == 107
            await node.apublish("bc:1", 3)
            assert [p["data"] for p in await a.wait_pubs("bc:1", 3)] == [{"x": 1}, {"all": True}, 3]
        else:
            resp = doc["result"]["responses"]
            assert "result" in resp[0]
            assert resp[1]["error"]["code"] == 107
            assert (await a.wait_pubs("bc:1", 3))[-1]["data"] == 2

    run(main())


def test_api_channels_and_info(node):
    async def main():
        cs = [await connect(node) for _ in range(3)]
        await cs[0].subscribe("chat:a")
        await cs[1].subscribe("chat:a")
        await cs[2].subscribe("chat:b")
        await cs[2].subscribe("other")
        res = await node.aapi_result("channels", {})
        assert res["channels"] == {"chat:a": {"subscribers": 2}, "chat:b": {"subscribers": 1},
                                   "other": {"subscribers": 1}}, res
        res = await node.aapi_result("channels", {"pattern": "chat:*"})
        assert set(res["channels"]) == {"chat:a", "chat:b"}, res
        info = await node.aapi_result("info", {})
        nodes = info["nodes"]
        assert len(nodes) == 1
        n = nodes[0]
        assert n["id"] == cs[0].info["node"]
        assert n["name"] == "e2e-node"
        assert n["connections"] == 3
        assert n["subscriptions"] == 4
        assert n["channels"] == 3
        assert n["uptime"] >= 0
        assert n["draining"] is False
        await cs[2].close()
        for _ in range(20):  # bounded wait for the server to notice
            info = (await node.aapi_result("info", {}))["nodes"][0]
            if info["connections"] == 2:
                break
            await asyncio.sleep(0.1)
        assert info["connections"] == 2 and info["channels"] == 1 and info["subscriptions"] == 2
        res = await node.aapi_result("channels", {})
        assert res["channels"] == {"chat:a": {"subscribers": 2}}

    run(main())


def test_api_disconnect_by_client(node):
    async def main():
        victim = await connect(node)
        bystander = await connect(node)
        assert await node.aapi_result("disconnect", {"client": victim.id}) == {}
        assert await victim.wait_closed() == 3502
        custom = await connect(node)
        await node.aapi_result("disconnect", {"client": custom.id, "code": 3010, "reason": "go away"})
        assert await custom.wait_closed() == 3010
        assert custom.close_reason == "go away"
        assert not bystander.closed.is_set()
        assert await bystander.result("ping", {}) == {}

    run(main())


def test_api_disconnect_and_unsubscribe_by_user(token_node):
    node = token_node

    async def main():
        f1 = await connect(node, token=user_token(TOKEN_SECRET, "frank"))
        f2 = await connect(node, token=user_token(TOKEN_SECRET, "frank"))
        g = await connect(node, token=user_token(TOKEN_SECRET, "grace"))
        anon = await connect(node)
        for c in (f1, f2, g, anon):
            await c.subscribe("u:room")
            await c.subscribe("u:other")

        assert await node.aapi_result("unsubscribe", {"user": "frank", "channel": "u:room"}) == {}
        for c in (f1, f2):
            p = await c.wait_push(lambda m: m.get("channel") == "u:room" and "unsubscribe" in m,
                                  what="unsubscribe push")
            assert p["unsubscribe"]["code"] == 2000
        await node.apublish("u:room", "after-unsub")
        await node.apublish("u:other", "marker")
        for c in (f1, f2):
            await c.wait_pub("u:other")
            assert c.pubs("u:room") == [], "unsubscribed user still receives"
        for c in (g, anon):
            assert (await c.wait_pub("u:room"))["data"] == "after-unsub"

        assert await node.aapi_result("disconnect", {"user": "frank"}) == {}
        assert await f1.wait_closed() == 3502
        assert await f2.wait_closed() == 3502
        # A round trip on each after frank's connections are gone: a disconnect meant for them would have come.
        for c in (g, anon):
            await c.result("ping", {})
        assert not g.closed.is_set() and not anon.closed.is_set()
        stats = await node.aapi_result("presenceStats", {"channel": "u:other"})
        assert stats == {"clients": 2, "users": 2}

    run(main())


def test_api_presence_history_via_http(node):
    async def main():
        c = await connect(node)
        await c.subscribe("h:api")
        pres = await node.aapi_result("presence", {"channel": "h:api"})
        assert set(pres["clients"]) == {c.id}
        for i in range(5):
            await node.apublish("h:api", i)
        h = await node.aapi_result("history", {"channel": "h:api", "limit": 2, "reverse": True})
        assert [p["offset"] for p in h["publications"]] == [5, 4]
        assert [p["data"] for p in h["publications"]] == [4, 3]

    run(main())


def test_api_is_fast_enough(node):
    """100 sequential API publishes finish in well under 10 s (no per-request stall)."""
    t0 = time.monotonic()
    for i in range(100):
        node.api_result("publish", {"channel": "speed", "data": i})
    assert time.monotonic() - t0 < 10
