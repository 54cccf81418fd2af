"""`limits.connectionsPerUser` across nodes on one Redis broker (issue 13, item 7).

Two real nodes on a real redis-server, tokens minted with PyJWT: the cap counts a user's
connections on every node together; a close anywhere makes room; a node killed with SIGKILL
stops counting once its registry entry expires (~6 s); with Redis unreachable a node admits on
its own count (fail-open to per-node counting) and says so in a metric.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import jwt

from conftest import require_broker_option
from sbclient import ClosedBeforeReply, connect, connect_expect_close, run

SECRET = "e2e-user-limit-secret-0123456789abcdef-0123456789"
REGISTRY_TTL = 6.0


def token(sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "exp": now + 600, "iat": now}, SECRET, algorithm="HS256", headers={"kid": "h1"})


def config(cap: int) -> str:
    return json.dumps({
        "tokens": {"hmac": [{"kid": "h1", "secret": SECRET, "algorithms": ["HS256"]}]},
        "limits": {"connectionsPerUser": cap},
        "namespaces": {"chat": {"allowSubscribeForClient": True}},
    })


def start_nodes(node_factory, redis_server, n: int, cap: int):
    require_broker_option()
    api_key = "e2e-users-" + str(time.time_ns())
    return [node_factory.start("--broker", redis_server.url, api_key=api_key, node_name=f"node{i}",
                               config_text=config(cap), config_name=f"node{i}.json")
            for i in range(n)]


def metric_value(node, name: str, labels: str = "") -> float:
    for line in node.http("GET", "/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def refused(node, sub: str) -> None:
    code, reply = await connect_expect_close(node, token(sub))
    assert code == 3504, f"connection of {sub} over the cap closed with {code}, reply {reply}"
    assert reply is None or "result" not in reply, reply


async def admitted_within(node, sub: str, seconds: float, what: str):
    """Connects `sub` to `node`, retrying refusals (3504) until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    attempts = 0
    while True:
        attempts += 1
        try:
            return await connect(node, token=token(sub)), attempts
        except (AssertionError, ClosedBeforeReply):
            assert time.monotonic() < deadline, f"{what}: still refused after {seconds} s ({attempts} attempts)"
            await asyncio.sleep(0.1)


def test_cap_counts_every_node_and_a_dead_node_stops_counting(node_factory, redis_server):
    a, b = start_nodes(node_factory, redis_server, 2, cap=3)

    async def main():
        a1 = await connect(a, token=token("alice"))
        a2 = await connect(a, token=token("alice"))
        b1 = await connect(b, token=token("alice"))
        assert a1.info["node"] != b1.info["node"], "both connections on one node"
        # The 4th is refused on either node: the count is the cluster's, not the node's.
        await refused(a, "alice")
        await refused(b, "alice")
        # Other users are not held back.
        bob = await connect(b, token=token("bob"))
        # A close on node A makes room on node B.
        await a1.close()
        b2, _ = await admitted_within(b, "alice", 10, "after a close on the other node")
        await refused(b, "alice")
        await refused(a, "alice")

        # Node A (holding a2) dies without a word: its count holds until its registry entry expires.
        a.signal(signal.SIGKILL)
        assert a.wait_exit(5) is not None
        killed = time.monotonic()
        await refused(b, "alice")
        assert time.monotonic() - killed < 3, "the check right after the kill came too late to mean anything"
        b3, attempts = await admitted_within(b, "alice", REGISTRY_TTL + 6, "after node A was killed")
        waited = time.monotonic() - killed
        print(f"slot of the killed node freed after {waited:.1f} s ({attempts} attempts)")
        assert waited < REGISTRY_TTL + 6
        # Up to the cap on node B alone, and not one more.
        for c in (b1, b2, b3, bob):
            assert await c.result("ping", {}) == {}
        await refused(b, "alice")
        assert metric_value(b, "switchboard_refused_connections_total", 'reason="user"') >= 4
        assert metric_value(b, "switchboard_user_limit_unchecked_total") == 0

    run(main())


def test_redis_unreachable_fails_open_to_the_per_node_cap(node_factory, redis_server):
    (node,) = start_nodes(node_factory, redis_server, 1, cap=2)

    async def main():
        held = [await connect(node, token=token("alice")) for _ in range(2)]
        await refused(node, "alice")
        redis_server.stop()
        # The node's own count still caps alice on this node...
        await refused(node, "alice")
        # ...while others are admitted without the cluster count, and the metric says so.
        carol, _ = await admitted_within(node, "carol", 15, "carol with Redis down")
        assert await carol.result("ping", {}) == {}
        assert metric_value(node, "switchboard_user_limit_unchecked_total") >= 1
        # A close still makes room on this node.
        await held[0].close()
        again, _ = await admitted_within(node, "alice", 15, "alice after a close with Redis down")
        await refused(node, "alice")
        for c in (held[1], again):
            assert await c.result("ping", {}) == {}

    run(main(), timeout=90)


def test_a_clean_stop_gives_the_slots_back_at_once(node_factory, redis_server):
    a, b = start_nodes(node_factory, redis_server, 2, cap=1)

    async def main():
        held = await connect(a, token=token("alice"))
        await refused(b, "alice")
        a.signal(signal.SIGTERM)  # drains (2 s), releases its sessions' slots, leaves the registry
        assert a.wait_exit(10) is not None
        stopped = time.monotonic()
        await held.close()
        c, _ = await admitted_within(b, "alice", REGISTRY_TTL, "after node A stopped cleanly")
        waited = time.monotonic() - stopped
        print(f"slot free {waited:.2f} s after a clean stop")
        assert waited < 2, f"a clean stop left alice's slot counted for {waited:.1f} s"
        await refused(b, "alice")
        assert await c.result("ping", {}) == {}

    run(main())
