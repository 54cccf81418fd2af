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
