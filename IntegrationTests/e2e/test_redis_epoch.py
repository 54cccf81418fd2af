"""A channel's epoch with the Redis broker, against a connected subscriber.

The epoch of a channel whose meta key does not exist is derived (reads store
nothing): from Redis's run id, the key, the meta-TTL period and the channel's
count of lives. When the channel's keys go while Redis keeps running (DEL,
eviction), its next publication starts offsets again at 1 in a NEW epoch, so a
subscriber is told (2500) instead of dropping offset 1 as a duplicate. (A
Redis restart gives a new run id: see
IntegrationTests/browser/test_browser_client_recovery.py. FLUSHDB within one period, which
also clears the lives count, is the documented exception.)"""

from __future__ import annotations

import subprocess

from sbclient import connect, run


def test_channel_keys_deleted_under_a_subscriber(cluster):
    (node,) = cluster.start(1)
    ch = "epoch:del"

    async def main():
        c = await connect(node)
        await c.subscribe(ch)
        first = await node.apublish(ch, "one")
        await c.wait_pubs(ch, 1)
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(cluster.redis.port), "DEL",
                              f"sb:{{{ch}}}:s", f"sb:{{{ch}}}:m"], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        second = await node.apublish(ch, "two")
        await node.apublish(ch, "sentinel")
        await c.wait_until(lambda: any(p.get("data") == "sentinel" for p in c.pubs(ch))
                           or any("unsubscribe" in p for p in c.pushes), 10, "the sentinel or a 2500")
        told = [p for p in c.pushes if "unsubscribe" in p]
        got = [p["data"] for p in c.pubs(ch)]
        # Either the epoch changed and the subscriber was told (2500), or it got every publication.
        assert second["epoch"] != first["epoch"] or got == ["one", "two", "sentinel"], (
            f"same epoch {first['epoch']}, offsets restarted at {second['offset']}, the subscriber got {got}")
        if second["epoch"] != first["epoch"]:
            assert told and told[0]["unsubscribe"]["code"] == 2500, c.pushes

    run(main())


def _roll_back(cluster, ch: str, top: int, lost: list[int]) -> None:
    """What a promoted replica or an older snapshot leaves: the channel kept, its newest
    publications gone, its top offset back at `top`, in the same epoch."""
    def redis_cli(*args: str) -> None:
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(cluster.redis.port), *args],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 0 and not out.stdout.startswith("ERR"), (out.stdout, out.stderr)
    redis_cli("XDEL", f"sb:{{{ch}}}:s", *[f"{o}-0" for o in lost])
    redis_cli("XSETID", f"sb:{{{ch}}}:s", f"{top}-0")
    redis_cli("HSET", f"sb:{{{ch}}}:m", "t", str(top))


async def _told_and_not_recovered(c, ch: str, epoch: str, position: int, timeout: float) -> None:
    await c.wait_until(lambda: any("unsubscribe" in p for p in c.pushes), timeout, "a 2500 for the channel")
    told = [p for p in c.pushes if "unsubscribe" in p]
    assert told[0]["unsubscribe"]["code"] == 2500, c.pushes
    again = await c.subscribe(ch, since={"offset": position, "epoch": epoch})
    assert again.get("recovered") is False, again
    assert again["epoch"] != epoch, again


def test_redis_reusing_offsets_is_told_not_hidden(cluster):
    """Redis loses the newest publications of a channel while keeping the channel (a replica
    promoted before it received them, a restore from an older snapshot): its top offset goes back
    in the same epoch and the next publications reuse offsets a subscriber already had. The node
    sees its last offset again with another publishing time, renews the epoch and tells the
    subscriber (2500), whose resubscription with its position reports `recovered: false`.
    (Before: the reused offsets were dropped as repeats, in silence.)"""
    (node,) = cluster.start(1)
    ch = "epoch:reused"

    async def main():
        c = await connect(node)
        await c.subscribe(ch)
        old = [await node.apublish(ch, f"old {i}") for i in range(1, 6)]
        await c.wait_pubs(ch, 5)
        epoch = old[-1]["epoch"]
        _roll_back(cluster, ch, 3, [4, 5])
        new = [await node.apublish(ch, f"new {i}") for i in (4, 5)]
        assert [(r["offset"], r["epoch"]) for r in new] == [(4, epoch), (5, epoch)], new
        await _told_and_not_recovered(c, ch, epoch, 5, timeout=10)

    run(main(), timeout=60)


def test_redis_top_below_what_was_delivered_is_told(cluster):
    """The same loss with nothing published afterwards: the node's position check finds the
    broker's top below what it delivered (twice, 5 s apart), renews the epoch and tells the
    subscriber (2500); its resubscription reports `recovered: false`."""
    (node,) = cluster.start(1)
    ch = "epoch:behind"

    async def main():
        c = await connect(node)
        await c.subscribe(ch)
        old = [await node.apublish(ch, f"old {i}") for i in range(1, 6)]
        await c.wait_pubs(ch, 5)
        _roll_back(cluster, ch, 3, [4, 5])
        await _told_and_not_recovered(c, ch, old[-1]["epoch"], 5, timeout=25)

    run(main(), timeout=60)
