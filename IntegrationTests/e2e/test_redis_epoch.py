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


def test_redis_losing_the_newest_publications_is_told_not_hidden(cluster):
    """Redis loses the newest publications of a channel while keeping the channel (a replica
    promoted before it received them, a restore from an older snapshot): its top offset goes back
    in the same epoch and the next publications reuse offsets a subscriber already had. The
    subscriber must not drop them as duplicates in silence: it gets them, or it is told (2500)
    and its resubscription with its position reports `recovered: false`."""
    (node,) = cluster.start(1)
    ch = "epoch:rollback"

    def redis_cli(*args: str) -> str:
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(cluster.redis.port), *args],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    async def main():
        c = await connect(node)
        sub = await c.subscribe(ch)
        for i in range(1, 6):
            await node.apublish(ch, f"old {i}")
        await c.wait_pubs(ch, 5)
        epoch = c.pubs(ch)[-1].get("epoch") or sub["epoch"]
        # Publications 4 and 5 are lost: the stream and the top offset go back to 3.
        redis_cli("XDEL", f"sb:{{{ch}}}:s", "4-0", "5-0")
        redis_cli("XSETID", f"sb:{{{ch}}}:s", "3-0")
        redis_cli("HSET", f"sb:{{{ch}}}:m", "t", "3")
        new = [await node.apublish(ch, f"new {i}") for i in (4, 5)]
        assert [r["offset"] for r in new] == [4, 5] and all(r["epoch"] == epoch for r in new), new
        await c.wait_until(lambda: any(p.get("data") in ("new 4", "new 5") for p in c.pubs(ch))
                           or any("unsubscribe" in p for p in c.pushes), 20, "the new publications or a 2500")
        if any(p.get("data") in ("new 4", "new 5") for p in c.pubs(ch)):
            return
        told = [p for p in c.pushes if "unsubscribe" in p]
        assert told[0]["unsubscribe"]["code"] == 2500, c.pushes
        again = await c.subscribe(ch, since={"offset": 5, "epoch": epoch})
        assert again.get("recovered") is False, again

    run(main(), timeout=60)
