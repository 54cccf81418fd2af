"""Node-side rebalancing after scale-out (issue 14 item 6), with real processes.

redis-server, nodes on the Redis broker, 600 WebSocket subscribers (Python
`websockets`, through `ResilientSubscriber`, which reconnects and recovers
from its last offset) on 2 nodes; 2 more nodes are started; the old nodes,
holding more than (1 + 0.10) x the mean for `--rebalance-hold`, ask their
excess to move (disconnect 3002) over `--rebalance-window`. Checked:

- max/min WebSocket connections per node ends at or under 1.10 (with 600
  clients on 4 nodes the ideal is 150 each; 1.10 allows 143..157);
- clients asked to move (the nodes' `switchboard_rebalance_moved_clients_total`,
  and the 3002 closes the clients saw) are at most 1.1 x the excess at
  scale-out (sum over nodes of count - mean = 300);
- every subscriber received every publication of a channel published to
  throughout (HTTP API, 5/s), exactly once, in offset order.

Two ways of placing the moved clients: directly (the test plays a
least-connections balancer: each reconnect goes to the node with the fewest
of the test's clients) and through `switchboard balance` reading the
registry.
"""

from __future__ import annotations

import asyncio
import os
import time

from balancerlib import BalancerFactory, proxy_binary
from sbclient import ApiPublisher, ResilientSubscriber, connect, run, stream_problems

import pytest
import requests

from test_deploy_proxies import haproxy_command, proxies  # noqa: F401  (the fixture)

# The suite's size: 600 clients and short settings so a test takes seconds (hold 3 s, window 4 s,
# 200/s, clients movable after 1 s). scripts/rebalance-at-scale.sh runs the same tests at the issue's
# size through these variables: 8,000 clients, 1,000 more arriving after the scale-out, the default
# hold and window, and a deadline of hold + window + 10 s (two windows behind HAProxy).
CLIENTS = int(os.environ.get("REBALANCE_CLIENTS", "600"))
LATE_CLIENTS = int(os.environ.get("REBALANCE_LATE_CLIENTS", "0"))
HOLD, WINDOW = (float(x) for x in os.environ.get("REBALANCE_HOLD_WINDOW", "3,4").split(","))
PUBLISH_RATE = float(os.environ.get("REBALANCE_PUBLISH_RATE", "5"))
AT_SCALE = "REBALANCE_CLIENTS" in os.environ
CHANNEL = "big:rebalance"
REBALANCE = ["--rebalance-hold", f"{HOLD:g}", "--rebalance-window", f"{WINDOW:g}", "--rebalance-rate", "200",
             "--rebalance-min-age", "1"]
if AT_SCALE:
    # Every client comes from 127.0.0.1 (or the proxy's address): lift the per-address cap (default 1,000).
    REBALANCE += ["--max-connections-per-ip", "20000"]
HISTORY_YAML = """\
# written by IntegrationTests/e2e/test_rebalance.py
namespaces:
  big:
    historySize: 2000
    historyTTL: 300
    presence: false
    joinLeave: false
    publish: true
    anonymous: true
"""


@pytest.fixture
def balancer_factory(tmp_path, request):
    f = BalancerFactory(tmp_path, request)
    try:
        yield f
    finally:
        f.stop_all()


def _metric(node, name: str) -> float:
    total = 0.0
    for line in node.http("GET", "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rpartition(" ")[2])
    return total


def _ws_counts(nodes) -> list[int]:
    return [_websocket_connections(n) for n in nodes]


def _websocket_connections(node) -> int:
    for line in node.http("GET", "/metrics").text.splitlines():
        if line.startswith("switchboard_connections") and 'transport="websocket"' in line:
            return int(float(line.rpartition(" ")[2]))
    return 0


async def _wait(cond, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(cond)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def _start_all(subs, batch: int = 50):
    for i in range(0, len(subs), batch):
        await asyncio.gather(*(s.start(timeout=30) for s in subs[i:i + batch]))


def _registry_lists(node, n: int) -> bool:
    """Whether the node's /api/info lists n nodes (the registry holds them all)."""
    info = node.api_result("info", {})
    return len(info.get("nodes", [])) >= n


def _scale_out_and_check(cluster, old, urls_for, choose_url, via: str, added=None):
    """Shared body: 600 subscribers placed by `urls_for(i)` / `choose_url`, two nodes added (and handed
    to `added`, e.g. to register them with a proxy), checks."""
    async def main():
        lifetime = 180 if not AT_SCALE else 900
        subs = [ResilientSubscriber(urls_for(i), [CHANNEL], name=f"s{i}", max_connects=40, lifetime=lifetime,
                                    op_timeout=10 if not AT_SCALE else 60, choose_url=choose_url)
                for i in range(CLIENTS)]
        await _start_all(subs)
        counts = await _wait(lambda: (c := _ws_counts(old)) and sum(c) == CLIENTS and c, 20 + CLIENTS / 100,
                             f"{CLIENTS} connections on the first two nodes")
        pub = ApiPublisher(list(old), CHANNEL, rate=PUBLISH_RATE, count=100_000, max_seconds=lifetime - 30).start()
        await pub.wait_acked(10, 15)
        # Rounds while the first 600 connected (the registry lags the arrivals) are not part of the scale-out:
        # let any such round finish (no client asked to move for 2 s, both nodes within 1.10 of the mean),
        # so that no 3002 asked before the scale-out reaches a client after it.
        def quiet():
            first = sum(_metric(n, "switchboard_rebalance_moved_clients_total") for n in old)
            time.sleep(2)
            return (sum(_metric(n, "switchboard_rebalance_moved_clients_total") for n in old) == first
                    and all(_metric(n, "switchboard_rebalance_imbalance_ratio") <= 1.10 for n in old)
                    and sum(_ws_counts(old)) == CLIENTS)
        await _wait(quiet, 40, "no rebalance round running on the first two nodes")
        moved_before = sum(_metric(n, "switchboard_rebalance_moved_clients_total") for n in old)
        rounds_before = sum(_metric(n, "switchboard_rebalance_rounds_total") for n in old)
        t0 = time.monotonic()
        # Old enough to be moved (--rebalance-min-age 1), then scale out.
        new = [cluster.start_node(*REBALANCE, config_text=HISTORY_YAML) for _ in range(2)]
        nodes = old + new
        if added is not None:
            added(new)
        await _wait(lambda: all(_registry_lists(n, 4) for n in old), 10, "the registry listing 4 nodes")
        before = _ws_counts(nodes)

        mean = sum(before) / len(nodes)
        excess = sum(max(0.0, c - mean) for c in before)
        late = [ResilientSubscriber(urls_for(CLIENTS + i), [CHANNEL], name=f"s{CLIENTS + i}", max_connects=40,
                                    lifetime=lifetime, op_timeout=10 if not AT_SCALE else 60, choose_url=choose_url)
                for i in range(LATE_CLIENTS)]
        if late:
            # New clients arrive after the scale-out, through the same balancer.
            await _start_all(late)
            subs += late
        total = CLIENTS + LATE_CLIENTS
        # The deadline of issue 14: the rebalance window + 10 s after the hold (two windows behind HAProxy).
        deadline = 60 if not AT_SCALE else HOLD + WINDOW * (2 if "HAProxy" in via else 1) + 10

        def balanced():
            c = _ws_counts(nodes)
            return sum(c) == total and min(c) > 0 and max(c) / min(c) <= 1.10 and c
        try:
            after = await _wait(balanced, deadline - (time.monotonic() - t0) if AT_SCALE else deadline,
                                f"max/min <= 1.10 over 4 nodes ({via})")
        except AssertionError as e:
            troubled = [s for s in subs if s.problems or (s.client is None or s.client.closed.is_set())]
            raise AssertionError(f"{e}; counts {_ws_counts(nodes)}; {len(troubled)} subscribers not connected, e.g. "
                                 f"{[(s.name, s.problems[:2], s.log[-4:]) for s in troubled[:3]]}") from None
        took = time.monotonic() - t0
        # Let any round still running finish, then count what was asked.
        await _wait(lambda: all(_metric(n, "switchboard_rebalance_imbalance_ratio") <= 1.10 for n in nodes),
                    20 + 2 * WINDOW, "every node's imbalance ratio <= 1.10")
        moved = sum(_metric(n, "switchboard_rebalance_moved_clients_total") for n in nodes) - moved_before
        rounds = sum(_metric(n, "switchboard_rebalance_rounds_total") for n in nodes) - rounds_before
        final = _ws_counts(nodes)
        await pub.stop()
        assert not pub.failed, pub.failed[:5]
        last = pub.acked[-1]
        for s in subs:
            await s.wait_position(CHANNEL, last["offset"], last["epoch"], timeout=30 if not AT_SCALE else 120)
        closes_3002 = sum(1 for s in subs for e in s.events[CHANNEL]
                          if e["kind"] == "close" and e["code"] == 3002 and e["t"] >= t0)
        for s in subs:
            await s.stop()
        print(f"\n[{via}] before {before} (excess {excess:.0f}); balanced {after} after {took:.1f}s; "
              f"final {final} max/min {max(final) / min(final):.3f}; asked to move {moved:.0f} "
              f"(closes 3002 seen {closes_3002}) in {rounds:.0f} rounds (before scale-out: {moved_before:.0f} in "
              f"{rounds_before:.0f}); {len(pub.acked)} publications; {LATE_CLIENTS} clients arrived after the "
              f"scale-out; hold {HOLD:g} s, window {WINDOW:g} s")
        assert moved <= 1.1 * excess, (moved, excess)
        assert closes_3002 <= moved
        # Late arrivals raise the mean: the old nodes then need to shed only their excess over the new mean.
        needed = sum(max(0.0, c - total / len(nodes)) for c in before)
        assert moved >= 0.9 * needed - 1, "fewer clients moved than the excess: who balanced them?"
        epoch = last["epoch"]
        first = pub.acked[0]["offset"]
        problems = [p for s in subs for p in stream_problems(s, CHANNEL)]
        assert problems == [], problems[:10]
        for s in subs:
            offsets = [o for o, e in s.received(CHANNEL) if e == epoch]
            if not offsets:
                # Only a late client whose subscribe came after the last publication (it is at that
                # position: wait_position above) may have received none.
                assert s in late, s.describe(CHANNEL)
                continue
            # A late client starts at the publication current when it subscribed; the others had the first.
            assert offsets == list(range(offsets[0], last["offset"] + 1)), s.describe(CHANNEL)
            assert s in late or offsets[0] <= first, s.describe(CHANNEL)
            assert s.told(CHANNEL) == [], s.describe(CHANNEL)

    run(main(), timeout=300 if not AT_SCALE else 1500)


def test_rebalance_after_scale_out_direct(cluster):
    """Clients placed by the test: each (re)connect goes to the node with the fewest of the test's clients."""
    old = cluster.start(2, *REBALANCE, config_text=HISTORY_YAML)
    target: dict[str, str] = {}  # subscriber name -> URL it is on (or connecting to)

    def choose(sub: ResilientSubscriber) -> str:
        nodes = cluster.nodes
        load = {n.ws_url: 0 for n in nodes}
        for name, url in target.items():
            if name != sub.name and url in load:
                load[url] += 1
        url = min(nodes, key=lambda n: (load[n.ws_url], n.port)).ws_url
        if not target.get(sub.name) and int(sub.name[1:]) < CLIENTS:  # first connects: round robin over the old nodes
            url = old[int(sub.name[1:]) % 2].ws_url
        target[sub.name] = url
        return url

    _scale_out_and_check(cluster, old, lambda i: [old[i % 2].ws_url], choose, "direct")


def test_rebalance_after_scale_out_behind_balancer(cluster, balancer_factory):
    """Clients through `switchboard balance --registry`: the moved clients' new connections land on the new nodes."""
    old = cluster.start(2, *REBALANCE, config_text=HISTORY_YAML)
    balancer = balancer_factory.start(old, "--registry", cluster.redis.url)
    _scale_out_and_check(cluster, old, lambda i: [balancer.ws_url], None, "switchboard balance")


def test_rebalance_after_scale_out_behind_haproxy(cluster, proxies):  # noqa: F811
    """Clients through HAProxy 2.6 running deploy/haproxy/haproxy.cfg (`balance leastconn`); the two new
    nodes are added through its runtime API. Node-side rebalancing needs nothing from the proxy."""
    if not proxy_binary("haproxy"):
        pytest.fail("haproxy is not installed (scripts/test.sh installs it with apt-get)")
    old = cluster.start(2, *REBALANCE, config_text=HISTORY_YAML)
    proxy = proxies("haproxy", old)
    with open(proxy.cfg_path) as f:
        api_port = int(next(line for line in f if "stats socket" in line).split("127.0.0.1:")[1].split()[0])

    def add(new):
        for i, n in enumerate(new, start=3):
            for command in (f"add server nodes/node{i} 127.0.0.1:{n.port} check",
                            f"enable health nodes/node{i}", f"enable server nodes/node{i}"):
                out = haproxy_command(api_port, command)
                assert "rror" not in out and "nknown" not in out, (command, out)

    _scale_out_and_check(cluster, old, lambda i: [proxy.ws_url], None, "HAProxy leastconn", added=add)


def test_admin_rebalance_reaches_the_nodes_with_their_api_key(cluster, balancer_factory, tmp_path):
    """`switchboard balance --node-api-key-file FILE`: `POST /admin/rebalance` asks every available node to
    rebalance now (`POST /api/rebalance` with the key). The node over its share starts a round at once
    instead of after its hold (600 s here), and asks its excess to move (3002). Without a key the nodes
    are not asked; with a wrong one each node answers 401 and nothing moves."""
    nodes = cluster.start(2, "--rebalance-hold", "600", "--rebalance-window", "2", "--rebalance-rate", "200",
                          "--rebalance-min-age", "1")
    good_key = tmp_path / "node-api-key"
    good_key.write_text(cluster.api_key + "\n")
    wrong_key = tmp_path / "wrong-api-key"
    wrong_key.write_text("e2e-not-the-nodes-key\n")
    with_key = balancer_factory.start(nodes, "--node-api-key-file", str(good_key))
    without_key = balancer_factory.start(nodes)
    with_wrong_key = balancer_factory.start(nodes, "--node-api-key-file", str(wrong_key))

    def post_rebalance(balancer) -> dict:
        with requests.Session() as s:
            s.trust_env = False
            r = s.post(balancer.admin_url + "/admin/rebalance", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    async def main():
        clients = [await connect(nodes[0]) for _ in range(20)]
        # Both nodes announced with their counts (20 and 0: the first is over 1.10 x the mean of 10),
        # and the clients old enough to be moved (--rebalance-min-age 1).
        await _wait(lambda: _registry_lists(nodes[0], 2), 15, "both nodes in the registry")
        await asyncio.sleep(2.5)
        moved = lambda: _metric(nodes[0], "switchboard_rebalance_moved_clients_total")  # noqa: E731
        assert moved() == 0, "a round ran before any request (the hold is 600 s)"

        answer = post_rebalance(without_key)
        assert answer["nodesAsked"] is False and "nodes" not in answer, answer
        answer = post_rebalance(with_wrong_key)
        assert answer["nodesAsked"] is True, answer
        assert sorted(n["node"] for n in answer["nodes"]) == sorted(f"127.0.0.1:{n.port}" for n in nodes), answer
        assert all(n.get("status") == 401 for n in answer["nodes"]), answer
        await asyncio.sleep(2)
        assert moved() == 0, "a node rebalanced without being asked with its key"
        assert all(c.close_code is None and not c.closed.is_set() for c in clients)

        answer = post_rebalance(with_key)
        assert answer["nodesAsked"] is True and all(n.get("status") == 200 for n in answer["nodes"]), answer
        await _wait(lambda: moved() >= 1, 10, "the node over its share asking clients to move")
        await asyncio.sleep(3)  # the round's window (2 s) is over
        closed = [c.close_code for c in clients if c.closed.is_set()]
        assert closed and set(closed) == {3002}, closed
        # Only the excess moves: 20 on one node and 0 on the other, mean 10, at most 10 asked.
        assert 1 <= len(closed) <= 10 and moved() == len(closed), (closed, moved())

    run(main(), timeout=90)
