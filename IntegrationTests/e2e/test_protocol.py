"""Connect, commands, pub/sub, offsets, idempotency, the echo endpoint."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from sbclient import connect, open_client, open_ws, run


def test_connect_result_fields(node):
    async def main():
        a = await connect(node)
        b = await connect(node, name="e2e", version="1.0")
        for c in (a, b):
            info = c.info
            assert isinstance(info["client"], str) and info["client"]
            assert isinstance(info["node"], str) and info["node"]
            assert isinstance(info["version"], str) and info["version"]
            assert info["ping"] == 25, "default --ping-interval is 25 s"
            assert info["pong"] is True
            assert "user" not in info, "no token given -> no user field"
            assert "subs" not in info, "no subs sent -> no subs field"
        assert a.id != b.id, "client ids must be unique"
        assert a.info["node"] == b.info["node"]
        assert await a.result("ping", {}) == {}

    run(main())


def test_command_before_connect_closes_3501(node):
    async def main():
        c = await open_client(node)
        await c.send_raw('{"id":1,"subscribe":{"channel":"early"}}')
        assert await c.wait_closed() == 3501
        assert all("result" not in r for r in c.unexpected_replies), "no subscribe result before connect"

    run(main())


def test_ping_before_connect_closes_3501(node):
    async def main():
        c = await open_client(node)
        await c.send_raw('{"id":1,"ping":{}}')
        assert await c.wait_closed() == 3501

    run(main())


@pytest.mark.parametrize("payload", ['{"id":2,"ping":', "not json at all", "[1,2,3]"])
def test_malformed_json_closes_3501(node, payload):
    async def main():
        c = await connect(node)
        await c.send_raw(payload)
        assert await c.wait_closed() == 3501

    run(main())


def test_unknown_method_error_104_connection_keeps_working(node):
    async def main():
        c = await connect(node)
        err = await c.error("frobnicate", {"x": 1})
        assert err["code"] == 104
        assert err.get("temporary") is False
        assert await c.result("ping", {}) == {}
        # And it still does real work.
        await c.subscribe("after:unknown")
        await node.apublish("after:unknown", {"ok": 1})
        assert (await c.wait_pub("after:unknown"))["data"] == {"ok": 1}
        assert not c.closed.is_set()

    run(main())


def test_several_commands_in_one_frame(node):
    """PROTOCOL.md: a client may put several JSON objects in one frame."""

    async def main():
        c = await connect(node)
        fut2 = asyncio.get_running_loop().create_future()
        fut3 = asyncio.get_running_loop().create_future()
        c._pending[1002] = fut2
        c._pending[1003] = fut3
        await c.send_raw('{"id":1002,"ping":{}}\n{"id":1003,"subscribe":{"channel":"multi"}}')
        r2 = await asyncio.wait_for(fut2, 5)
        r3 = await asyncio.wait_for(fut3, 5)
        assert r2 == {"id": 1002, "result": {}}
        assert "result" in r3 and r3["result"]["epoch"]

    run(main())


def test_pubsub_between_two_ws_clients(node):
    async def main():
        a = await connect(node)
        b = await connect(node)
        sub = await b.subscribe("chat:room")
        assert sub["offset"] == 0, sub
        assert isinstance(sub["epoch"], str) and sub["epoch"]
        assert sub["recoverable"] is True and sub["positioned"] is True
        assert "recovered" not in sub, "recovered only when since was given"
        r = await a.publish("chat:room", {"text": "hello"})
        assert r["offset"] == 1 and r["epoch"] == sub["epoch"]
        pub = await b.wait_pub("chat:room")
        assert pub["data"] == {"text": "hello"}
        assert pub["offset"] == 1
        assert pub["info"]["client"] == a.id
        assert pub["info"]["user"] == "", "anonymous publisher -> user is empty"
        # The publisher is not subscribed and gets nothing: a sentinel on a channel it does follow,
        # published after, arrives after anything that would have.
        await a.subscribe("chat:sentinel")
        await node.apublish("chat:sentinel", "sentinel")
        await a.wait_sentinel("chat:sentinel")
        assert a.pubs("chat:room") == []

    run(main())


def test_api_publish_reaches_ws_subscribers_offsets_increase(node):
    async def main():
        subs = [await connect(node) for _ in range(3)]
        epochs = set()
        for s in subs:
            epochs.add((await s.subscribe("news"))["epoch"])
        assert len(epochs) == 1
        offsets = []
        for i in range(10):
            r = await node.apublish("news", {"i": i})
            offsets.append(r["offset"])
            assert r["epoch"] in epochs
        assert offsets == list(range(1, 11))
        for s in subs:
            pubs = await s.wait_pubs("news", 10)
            assert [p["offset"] for p in pubs] == list(range(1, 11))
            assert [p["data"] for p in pubs] == [{"i": i} for i in range(10)]
            assert all("info" not in p for p in pubs), "API publications carry no client info"

    run(main())


def test_publish_any_json_data(node):
    async def main():
        c = await connect(node)
        await c.subscribe("types")
        values = ["a string", 42, 1.5, True, None, [1, "x", {"y": []}], {"nested": {"deep": [1, 2]}}, "ünïcødé ✓"]
        for v in values:
            await c.publish("types", v)
        pubs = await c.wait_pubs("types", len(values))
        assert [p["data"] for p in pubs] == values

    run(main())


def test_client_publish_offsets_increase_by_one(node):
    async def main():
        a = await connect(node)
        b = await connect(node)
        await b.subscribe("seq")
        got = [(await a.publish("seq", {"n": n}))["offset"] for n in range(20)]
        assert got == list(range(1, 21))
        pubs = await b.wait_pubs("seq", 20)
        assert [p["offset"] for p in pubs] == got
        assert {p["info"]["client"] for p in pubs} == {a.id}

    run(main())


def test_unsubscribe_stops_delivery(node):
    async def main():
        c = await connect(node)
        await c.subscribe("u:1")
        await c.subscribe("u:2")
        assert await c.result("unsubscribe", {"channel": "u:1"}) == {}
        assert await c.result("unsubscribe", {"channel": "never-subscribed"}) == {}
        await node.apublish("u:1", "dropped")
        await node.apublish("u:2", "kept")
        await c.wait_pub("u:2")
        assert c.pubs("u:1") == []
        # Re-subscribing after unsubscribe is allowed (no 105).
        await c.subscribe("u:1")

    run(main())


def test_idempotent_publish_api(node):
    async def main():
        c = await connect(node)
        await c.subscribe("idem:api")
        r1 = await node.apublish("idem:api", {"v": 1}, idempotencyKey="key-1")
        r2 = await node.apublish("idem:api", {"v": 1}, idempotencyKey="key-1")
        assert r1 == r2, "same idempotencyKey -> same offset/epoch"
        r3 = await node.apublish("idem:api", {"v": 2}, idempotencyKey="key-2")
        assert r3["offset"] == r1["offset"] + 1
        await node.apublish("idem:api", "sentinel")
        pubs = await c.wait_sentinel("idem:api")
        assert [p["data"] for p in pubs] == [{"v": 1}, {"v": 2}], "duplicate delivered"
        hist = await node.aapi_result("history", {"channel": "idem:api"})
        assert [p["data"] for p in hist["publications"]] == [{"v": 1}, {"v": 2}, "sentinel"]

    run(main())


def test_idempotent_publish_ws(node):
    async def main():
        a = await connect(node)
        b = await connect(node)
        await b.subscribe("idem:ws")
        r1 = await a.publish("idem:ws", {"v": 1}, idempotencyKey="k")
        r2 = await a.publish("idem:ws", {"v": 1}, idempotencyKey="k")
        assert r1["offset"] == r2["offset"] and r1["epoch"] == r2["epoch"]
        await a.publish("idem:ws", "sentinel")
        assert [p["data"] for p in await b.wait_sentinel("idem:ws")] == [{"v": 1}]
        # The key is per channel: the same key elsewhere is a new publication.
        await b.subscribe("idem:other")
        r4 = await a.publish("idem:other", {"v": 1}, idempotencyKey="k")
        assert r4["offset"] == 1
        await b.wait_pub("idem:other")

    run(main())


def test_echo_endpoint_off_by_default(node):
    # The node must be up before and after: a dead node also refuses the upgrade (with an OSError),
    # which must not count as "off". Off is an HTTP answer refusing the upgrade.
    assert node.http("GET", "/healthz").status_code == 200

    async def main():
        with pytest.raises(InvalidStatus) as refused:
            ws = await open_ws(node.echo_url)
            await ws.close()
        status = refused.value.response.status_code
        assert status == 404, f"/echo while off answered HTTP {status}, not 404"

    run(main())
    assert node.http("GET", "/healthz").status_code == 200


def test_echo_endpoint_echoes(node_factory):
    n = node_factory.start("--echo-endpoint")

    async def main():
        ws = await open_ws(n.echo_url)
        try:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 5) == "hello"
            await ws.send(b"\x00\x01\xff")
            assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01\xff"
            big = "x" * (1 << 20)  # over the /ws limit, under the echo limit of 16 MiB
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 10) == big
        finally:
            await ws.close()

    run(main())


def test_demo_page(node):
    r = node.http("GET", "/")
    assert r.status_code == 200
    assert "html" in r.headers.get("content-type", "").lower() or "<html" in r.text.lower()
