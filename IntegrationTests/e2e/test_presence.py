"""Presence, presenceStats, join/leave pushes (WS and HTTP API)."""

from __future__ import annotations

import asyncio
import json

import pytest


from conftest import JOIN_LEAVE_YAML
from sbclient import TOKEN_SECRET, connect, run, user_token


def _is_join(client_id, channel):
    return lambda p: p.get("channel") == channel and p.get("join", {}).get("client") == client_id


def _is_leave(client_id, channel):
    return lambda p: p.get("channel") == channel and p.get("leave", {}).get("client") == client_id


def test_presence_and_stats_with_anonymous_user(token_node):
    node = token_node

    async def main():
        ch = "room:presence"
        alice = await connect(node, token=user_token(TOKEN_SECRET, "alice", info={"name": "Alice"}))
        assert alice.info["user"] == "alice"
        anon = await connect(node)
        assert "user" not in anon.info
        await alice.subscribe(ch)
        await anon.subscribe(ch)

        expected = {
            alice.id: ("alice", {"name": "Alice"}),
            anon.id: ("", None),
        }
        for pres in (await alice.result("presence", {"channel": ch}),
                     await node.aapi_result("presence", {"channel": ch})):
            clients = pres["clients"]
            assert set(clients) == set(expected), clients
            for cid, (user, info) in expected.items():
                assert clients[cid]["user"] == user
                assert clients[cid].get("client", cid) == cid
                if info is not None:
                    assert clients[cid]["info"] == info
        for stats in (await anon.result("presenceStats", {"channel": ch}),
                      await node.aapi_result("presenceStats", {"channel": ch})):
            assert stats == {"clients": 2, "users": 2}, stats

        # A second connection of the same user: 3 clients, still 2 users.
        alice2 = await connect(node, token=user_token(TOKEN_SECRET, "alice"))
        await alice2.subscribe(ch)
        for watcher in (alice, anon):
            j = await watcher.wait_push(_is_join(alice2.id, ch), what="join push")
            assert j["join"]["user"] == "alice"
        stats = await node.aapi_result("presenceStats", {"channel": ch})
        assert stats == {"clients": 3, "users": 2}, stats

        # Unsubscribe -> leave.
        await alice2.result("unsubscribe", {"channel": ch})
        for watcher in (alice, anon):
            lv = await watcher.wait_push(_is_leave(alice2.id, ch), what="leave push after unsubscribe")
            assert lv["leave"]["user"] == "alice"
        pres = await node.aapi_result("presence", {"channel": ch})
        assert set(pres["clients"]) == {alice.id, anon.id}

        # Subscribe again, then disconnect -> join, then leave.
        await alice2.subscribe(ch)
        await anon.wait_push(_is_join(alice2.id, ch), what="second join")
        await alice2.close()
        for watcher in (alice, anon):
            await watcher.wait_push(_is_leave(alice2.id, ch), what="leave push after disconnect")
        assert await node.aapi_result("presenceStats", {"channel": ch}) == {"clients": 2, "users": 2}

        # The anonymous client leaves too: its leave carries user "".
        await anon.close()
        lv = await alice.wait_push(_is_leave(anon.id, ch), what="anonymous leave")
        assert lv["leave"]["user"] == ""
        pres = await node.aapi_result("presence", {"channel": ch})
        assert set(pres["clients"]) == {alice.id}

    run(main())


def test_join_push_for_anonymous_client(node):
    async def main():
        ch = "room:anon"
        a = await connect(node)
        await a.subscribe(ch)
        b = await connect(node)
        await b.subscribe(ch)
        j = await a.wait_push(_is_join(b.id, ch), what="join push")
        assert j["join"] == {"client": b.id, "user": ""} or (
            j["join"]["client"] == b.id and j["join"]["user"] == "")
        await b.result("unsubscribe", {"channel": ch})
        await a.wait_push(_is_leave(b.id, ch), what="leave push")
        # Nothing about other channels (a sentinel publication comes after anything that was sent).
        await node.apublish(ch, "sentinel")
        await a.wait_sentinel(ch)
        assert all(p.get("channel") == ch for p in a.pushes)

    run(main())


def test_presence_of_empty_channel(node):
    res = node.api_result("presence", {"channel": "nobody"})
    assert res["clients"] == {}
    assert node.api_result("presenceStats", {"channel": "nobody"}) == {"clients": 0, "users": 0}


@pytest.mark.parametrize("broker", ["memory", "redis"])
def test_token_meta_is_for_the_api_only(broker, request):
    """A token's `meta` claim is server-side data: the HTTP API's presence shows it, while the
    clients' presence, join pushes and publications never carry it (info they do)."""
    if broker == "memory":
        nodes = [request.getfixturevalue("token_node")]
    else:
        # Two nodes through Redis: the presence entry and the join cross the broker.
        nodes = request.getfixturevalue("cluster").start(2, token_secret=TOKEN_SECRET, config_text=JOIN_LEAVE_YAML)
    meta = {"plan": "pro", "crm_id": 4711}

    async def main():
        ch = "room:meta"
        watcher = await connect(nodes[-1], token=user_token(TOKEN_SECRET, "watcher"))
        await watcher.subscribe(ch)
        alice = await connect(nodes[0], token=user_token(TOKEN_SECRET, "alice", info={"name": "Alice"}, meta=meta))
        assert "meta" not in json.dumps(alice.info), alice.info
        await alice.subscribe(ch)
        join = await watcher.wait_push(_is_join(alice.id, ch), what="alice's join")
        assert join["join"].get("info") == {"name": "Alice"} and "meta" not in join["join"], join
        for node in nodes:
            api = await node.aapi_result("presence", {"channel": ch})
            assert api["clients"][alice.id]["meta"] == meta, api
            assert api["clients"][alice.id]["info"] == {"name": "Alice"}, api
        for client in (alice, watcher):
            seen = await client.result("presence", {"channel": ch})
            assert "meta" not in json.dumps(seen), seen
            assert seen["clients"][alice.id]["info"] == {"name": "Alice"}, seen
        await alice.result("publish", {"channel": ch, "data": {"text": "hi"}})
        pub = await watcher.wait_push(lambda p: p.get("channel") == ch and "pub" in p, what="alice's publication")
        assert "crm_id" not in json.dumps(pub), pub
        history = await nodes[-1].aapi_result("history", {"channel": ch})
        assert "crm_id" not in json.dumps(history), history
        await alice.close()
        await watcher.close()

    run(main())
