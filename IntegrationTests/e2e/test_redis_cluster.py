"""Nodes on a Redis Cluster (`serve --broker redis+cluster://seed1,seed2,...`).

Each test starts its own cluster of real redis-server processes on free
loopback ports (fixtures `redis_cluster`: 3 masters; `redis_cluster_with_replicas`:
3 masters with a replica each; see sbrediscluster.py) and Switchboard nodes
node0, node1 on it, every node listed as a seed. A channel's keys share the
hash tag `sb:{<channel>}:...`, so the tests pick channel names by
`CLUSTER KEYSLOT sb:{<channel>}:s` to put channels on every master.
Publications go through classic PUBLISH, which the cluster forwards to every
node. What is checked is what a client or a backend sees: the WebSocket
protocol and the HTTP API of each node.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from balancerlib import BalancerFactory, admin_nodes, node_id, wait_until
from conftest import Cluster, require_broker_option
from test_cluster import _eventually
from sbclient import ApiPublisher, ResilientSubscriber, connect, connect_url, run, stream_problems
from sbrediscluster import RedisCluster


@pytest.fixture
def sb(redis_cluster, node_factory):
    """Start nodes with `sb.start(n)` on the cluster `sb.redis` (3 masters, no replicas).
    The cluster fixture comes first, so it is stopped after the nodes."""
    require_broker_option()
    c = Cluster(node_factory, redis_cluster)
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def sb_replicas(redis_cluster_with_replicas, node_factory):
    """The same on a cluster of 3 masters with a replica each."""
    require_broker_option()
    c = Cluster(node_factory, redis_cluster_with_replicas)
    try:
        yield c
    finally:
        c.stop_all()


def stream_key(channel: str) -> str:
    return f"sb:{{{channel}}}:s"


def channels_on_every_master(rc: RedisCluster, per_master: int, prefix: str, limit: int = 500) -> dict[int, list[str]]:
    """{master port: [channel, ...]} with `per_master` channel names on each master,
    chosen by the slot of their stream key."""
    view = rc.slots()
    out: dict[int, list[str]] = {m: [] for m in sorted({r["master"] for r in view})}
    for i in range(limit):
        ch = f"{prefix}{i}"
        master = rc.master_for_slot(rc.keyslot(stream_key(ch)), view)
        if len(out[master]) < per_master:
            out[master].append(ch)
        if all(len(v) >= per_master for v in out.values()):
            return out
    raise AssertionError(f"{limit} names did not give {per_master} channels per master: {out}")


def _offsets(pubs):
    return [p["offset"] for p in pubs]


# --------------------------------------------------------------------------
# Fan-out, recovery, presence and the node registry across nodes
# --------------------------------------------------------------------------


def test_publications_cross_nodes_on_every_master(sb):
    """3 channels on each master; a client on node1 subscribes to all of them, a
    client on node0 publishes 20 to each (rounds over all channels). node1's client
    gets each publication exactly once, in order, offsets 1..20 in the epoch of its
    subscribe; history on node0 has all of them; each channel's stream key is on the
    master serving its slot."""
    a, b = sb.start(2)
    rc = sb.redis
    by_master = channels_on_every_master(rc, 3, "cx:ch")
    channels = [ch for chs in by_master.values() for ch in chs]
    n = 20

    async def main():
        sub = await connect(b)
        epochs = {}
        for ch in channels:
            res = await sub.subscribe(ch)
            epochs[ch] = res["epoch"]
        pub = await connect(a)
        for i in range(1, n + 1):
            results = await asyncio.gather(*(pub.publish(ch, {"n": i, "ch": ch}) for ch in channels))
            for ch, res in zip(channels, results):
                assert res["offset"] == i, f"publish {i} to {ch}: {res}"
                assert res["epoch"] == epochs[ch], f"{ch}: publish epoch {res['epoch']} != subscribe's {epochs[ch]}"
        # A sentinel after everything: once it is in, a late duplicate would have come before it.
        for ch in channels:
            assert (await pub.publish(ch, "sentinel"))["offset"] == n + 1
        for ch in channels:
            pubs = await sub.wait_sentinel(ch, timeout=10)
            assert _offsets(pubs) == list(range(1, n + 1)), f"{ch} on node1: offsets {_offsets(pubs)}"
            assert [p["data"] for p in pubs] == [{"n": i, "ch": ch} for i in range(1, n + 1)], ch
            assert all(p["info"]["client"] == pub.id for p in pubs), pubs[:2]
        for ch in channels:
            h = await a.aapi_result("history", {"channel": ch})
            assert h["epoch"] == epochs[ch] and h["offset"] == n + 1, (ch, {k: h[k] for k in ("offset", "epoch")})
            assert _offsets(h["publications"]) == list(range(1, n + 2)), ch
            assert [p["data"] for p in h["publications"][:n]] == [{"n": i, "ch": ch} for i in range(1, n + 1)]

    run(main())
    for master, chs in by_master.items():
        for ch in chs:
            assert rc.cli(master, "EXISTS", stream_key(ch)) == "1", (
                f"{stream_key(ch)} is not on 127.0.0.1:{master}, the master of its slot")


def test_recovery_on_other_node(sb):
    """On one channel per master: a client subscribed on node0 gets 5 publications
    (node1's API), leaves; 10 more through node1's API; it subscribes on node1 with
    `since` = its last position: recovered true, exactly offsets 6..15 with their
    data, then live publications continue with no duplicate at the seam."""
    a, b = sb.start(2)
    channels = [chs[0] for chs in channels_on_every_master(sb.redis, 1, "rec:x").values()]

    async def main():
        first = await connect(a)
        positions = {}
        for ch in channels:
            positions[ch] = {"epoch": (await first.subscribe(ch))["epoch"]}
        for ch in channels:
            for i in range(1, 6):
                assert (await b.apublish(ch, {"n": i}))["offset"] == i
        for ch in channels:
            pubs = await first.wait_pubs(ch, 5)
            assert _offsets(pubs) == [1, 2, 3, 4, 5], ch
            positions[ch]["offset"] = pubs[-1]["offset"]
        await first.close()

        for ch in channels:
            for i in range(6, 16):
                res = await b.apublish(ch, {"n": i})
                assert (res["offset"], res["epoch"]) == (i, positions[ch]["epoch"]), (ch, res)

        again = await connect(b)
        for ch in channels:
            res = await again.subscribe(ch, since=positions[ch])
            assert res["recovered"] is True, (ch, res)
            assert res["epoch"] == positions[ch]["epoch"] and res["offset"] == 15, (ch, res)
            assert _offsets(res["publications"]) == list(range(6, 16)), (ch, _offsets(res["publications"]))
            assert [p["data"] for p in res["publications"]] == [{"n": i} for i in range(6, 16)]
        for ch in channels:
            assert (await a.apublish(ch, "sentinel"))["offset"] == 16
        for ch in channels:
            assert await again.wait_sentinel(ch, timeout=10) == [], f"{ch}: live publications before the sentinel"
            assert again.pubs(ch)[-1]["offset"] == 16

    run(main())


def test_presence_and_registry(sb):
    """Presence of channels (one per master) joined on node0 is read on node1 (API and
    WebSocket) and the other way round; a client gone from node0 leaves node1's view.
    /api/info on either node lists both nodes with the same ids."""
    a, b = sb.start(2)
    channels = [chs[0] for chs in channels_on_every_master(sb.redis, 1, "pres:x").values()]

    async def main():
        ca = await connect(a)
        cb = await connect(b)
        for ch in channels:
            await ca.subscribe(ch)

        def only(*ids):
            return lambda p: set(p["clients"]) == set(ids)

        for ch in channels:
            await _eventually(lambda: b.aapi_result("presence", {"channel": ch}), only(ca.id), 5,
                              f"API presence of {ch} on node1")
            await _eventually(lambda: cb.result("presence", {"channel": ch}), only(ca.id), 5,
                              f"WS presence of {ch} on node1")
            await _eventually(lambda: b.aapi_result("presenceStats", {"channel": ch}),
                              lambda s: s == {"clients": 1, "users": 1}, 5, f"presenceStats of {ch} on node1")
            await cb.subscribe(ch)
        for ch in channels:
            await _eventually(lambda: a.aapi_result("presence", {"channel": ch}), only(ca.id, cb.id), 5,
                              f"API presence of {ch} on node0 with node1's client")
            pres = await ca.result("presence", {"channel": ch})
            assert set(pres["clients"]) == {ca.id, cb.id}, (ch, pres)
        await ca.close()
        for ch in channels:
            await _eventually(lambda: b.aapi_result("presence", {"channel": ch}), only(cb.id), 5,
                              f"presence of {ch} on node1 without node0's closed client")

        ids = None
        for i, node in enumerate((a, b)):
            info = await _eventually(lambda: node.aapi_result("info", {}),
                                     lambda info: sorted(e.get("name") for e in info["nodes"]) == ["node0", "node1"],
                                     10, f"info on node{i} listing node0 and node1")
            by_name = {e["name"]: e["id"] for e in info["nodes"]}
            assert ids is None or by_name == ids, f"nodes disagree on node ids: {ids} vs {by_name}"
            ids = by_name
        assert ids["node0"] != ids["node1"], ids
        assert ids["node0"] == ca.info["node"] and ids["node1"] == cb.info["node"], (ids, ca.info, cb.info)

    run(main())


# --------------------------------------------------------------------------
# Failover of a master
# --------------------------------------------------------------------------


def test_master_failover(sb_replicas):
    """A subscriber on node1 to a channel served by master M (it reconnects and
    re-subscribes with `since` if told to, like a client app). M is SIGKILLed and
    its replica promoted; publishing through node0's API succeeds again within
    15 s of the failover, and the subscriber gets what was acknowledged after it,
    with no silent gap in its stream. Both nodes keep running."""
    a, b = sb_replicas.start(2)
    rc = sb_replicas.redis
    victim = rc.master_ports()[0]
    ch = channels_on_every_master(rc, 1, "fo:x")[victim][0]
    slot = rc.keyslot(stream_key(ch))

    async def main():
        sub = ResilientSubscriber([b.ws_url], [ch], name="on-node1")
        await sub.start()
        before = await a.apublish(ch, {"n": "before"})
        assert before["offset"] == 1, before
        await sub.wait_position(ch, 1, before["epoch"], timeout=10)

        t_kill = time.monotonic()
        await asyncio.to_thread(rc.kill, victim)
        promoted = await asyncio.to_thread(rc.wait_for_failover, victim, 20)
        t_failover = time.monotonic()
        assert promoted != victim and await asyncio.to_thread(rc.master_for_slot, slot) == promoted

        api = ApiPublisher([a], ch, request_timeout=3)
        failures, after = [], None
        for attempt in range(1, 200):
            out = await api.publish_once(a, {"after": attempt})
            if "result" in out:
                after = out["result"]
                break
            failures.append(out)
            if time.monotonic() - t_failover > 15:
                break
            await asyncio.sleep(0.25)
        assert after is not None, f"no publish through node0 succeeded within 15 s of the failover: {failures[-3:]}"
        t_ok = time.monotonic()
        acked = [(after["offset"], after["epoch"])]
        for i in range(5):  # more, through both nodes
            res = await (a if i % 2 else b).apublish(ch, {"more": i})
            acked.append((res["offset"], res["epoch"]))
        assert [o for o, _ in acked] == list(range(acked[0][0], acked[0][0] + 6)), acked
        assert len({e for _, e in acked}) == 1, acked
        await sub.wait_for(lambda: all(k in sub.received(ch) for k in acked), 10,
                           "the publications acknowledged after the failover")
        await sub.stop()

        received = sub.received(ch)
        assert received.index(acked[0]) < received.index(acked[-1]), received
        assert stream_problems(sub, ch) == [], sub.describe(ch)
        assert a.alive() and b.alive(), "a node died in the failover"
        print(f"failover of {victim} to {promoted} in {t_failover - t_kill:.1f} s; publishing back "
              f"{t_ok - t_failover:.1f} s later after {len(failures)} failed attempts "
              f"({[f.get('kind') for f in failures[:5]]}); subscriber told {len(sub.told(ch))} times, "
              f"{len(sub.connections)} connection(s); first publication after: {after}")

    run(main(), timeout=90)
    assert a.alive() and b.alive(), "a node exited after the failover"


# --------------------------------------------------------------------------
# The balancer reads the node registry from the cluster
# --------------------------------------------------------------------------


def test_balancer_takes_nodes_from_the_cluster_registry(sb, tmp_path, request):
    """`switchboard balance --registry redis+cluster://...` finds the nodes that announce
    themselves on the cluster (registry keys on different slots, read one GET each), adds a node
    that joins, and routes clients to all of them; a publication through one node reaches a
    client the balancer placed on another."""
    a, b = sb.start(2)
    balancers = BalancerFactory(tmp_path, request)
    try:
        bal = balancers.start([], "--registry", sb.redis.url, "--algorithm", "round-robin")

        def members() -> set[int]:
            return {n["port"] for n in admin_nodes(bal)["nodes"] if n["member"] and n["available"]}

        wait_until(lambda: members() == {a.port, b.port}, 8, "both nodes taken from the cluster's registry")
        c = sb.start_node()
        wait_until(lambda: members() == {a.port, b.port, c.port}, 8, "the third node taken from the registry")

        async def main():
            clients = [await connect_url(f"ws://127.0.0.1:{bal.port}/ws") for _ in range(6)]
            placed = {cl.info["node"] for cl in clients}
            assert placed == {node_id(n) for n in (a, b, c)}, placed
            for cl in clients:
                await cl.subscribe("via-balancer")
            res = await a.apublish("via-balancer", {"hello": "cluster"})
            for cl in clients:
                pub = await cl.wait_pub("via-balancer", timeout=10)
                assert pub["data"] == {"hello": "cluster"} and pub["offset"] == res["offset"], pub
            for cl in clients:
                await cl.close()

        run(main(), timeout=60)
        assert bal.alive()
    finally:
        balancers.stop_all()


# --------------------------------------------------------------------------
# The multi-node suite's behaviours, run again with the nodes on a cluster
# --------------------------------------------------------------------------

import test_cluster  # noqa: E402
import test_longpoll  # noqa: E402
import test_sse  # noqa: E402

ON_ONE_REDIS = [
    test_cluster.test_publications_reach_every_node_in_offset_order,
    test_cluster.test_presence_is_cluster_wide,
    test_cluster.test_api_disconnect_and_unsubscribe_reach_other_nodes,
    test_cluster.test_node_sigkill_during_publishing_loses_nothing,
    test_sse.test_sse_resume_across_cluster,
    test_sse.test_sse_commands_alternating_nodes_keep_order,
    test_sse.test_sse_post_for_a_dead_node,
    test_longpoll.test_poll_alternating_nodes_cluster,
]


@pytest.mark.parametrize("body", ON_ONE_REDIS, ids=[f.__name__ for f in ON_ONE_REDIS])
def test_multi_node_behaviour_on_a_redis_cluster(sb, body):
    """The tests of nodes sharing one Redis (cross-node fan-out in offset order, presence, API
    disconnect/unsubscribe through control messages, a node SIGKILLed while publishing, SSE commands
    forwarded to the stream's node and resumed elsewhere, long-polls alternating nodes), each run
    unchanged with the nodes on a three-master cluster."""
    body(sb)
