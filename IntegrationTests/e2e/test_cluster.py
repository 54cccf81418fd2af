"""Several nodes sharing one Redis broker (`serve --broker redis://...`).

Each test starts its own empty redis-server on a free loopback port (fixture
`redis_server`) and its nodes on it (fixture `cluster`: node0, node1, ...,
one API key). What is checked is what a client or a backend can see: the
WebSocket protocol and the HTTP API of each node.
"""

from __future__ import annotations

import asyncio
import signal
import time

from sbclient import (TOKEN_SECRET, ApiPublisher, ResilientSubscriber, connect, is_told, run, stream_problems,
                      user_token)

# A namespace with room for every publication of the failure tests, so that
# recovery never depends on how fast a client comes back.
BIG_HISTORY_YAML = """\
# written by IntegrationTests/e2e/test_cluster.py
namespaces:
  big:
    historySize: 1000
    historyTTL: 300
    presence: true
    joinLeave: true
    publish: true
    anonymous: true
"""

from conftest import JOIN_LEAVE_YAML  # noqa: E402

INFO_KEYS = {"id", "name", "connections", "subscriptions", "channels", "uptime", "draining"}


def _offsets(pubs):
    return [p["offset"] for p in pubs]


async def _eventually(fn, check, timeout, what, interval=0.1):
    """Call `fn()` (async) until `check(value)`; bounded by `timeout`. Returns the last value."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        value = await fn()
        if check(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------
# Fan-out, presence, recovery across nodes
# --------------------------------------------------------------------------


def test_publications_reach_every_node_in_offset_order(cluster):
    """Concurrent publications from every node (WebSocket and HTTP API) reach
    the subscribers of every node, each in offset order 1..N, no duplicate,
    with the data the publisher was acknowledged for that offset."""
    nodes = cluster.start(3)

    async def main():
        ch = "fan:all"
        subs = [await connect(n) for n in nodes for _ in range(2)]
        for s in subs:
            await s.subscribe(ch)
        ws_pubs = [await connect(n) for n in nodes]
        by_offset = {}
        epochs = set()
        rounds = 10
        for r in range(rounds):
            datas = ([{"ws": i, "r": r} for i in range(len(ws_pubs))]
                     + [{"api": i, "r": r} for i in range(len(nodes))])
            coros = ([p.publish(ch, d) for p, d in zip(ws_pubs, datas)]
                     + [n.apublish(ch, d) for n, d in zip(nodes, datas[len(ws_pubs):])])
            for res, d in zip(await asyncio.gather(*coros), datas):
                assert res["offset"] not in by_offset, f"offset {res['offset']} given twice"
                by_offset[res["offset"]] = d
                epochs.add(res["epoch"])
        n = rounds * (len(ws_pubs) + len(nodes))
        assert sorted(by_offset) == list(range(1, n + 1)), "offsets across nodes are not 1..N"
        assert len(epochs) == 1, f"one channel, several epochs: {epochs}"
        # A sentinel after everything: once a subscriber has it, a duplicate would have come before it.
        await nodes[0].apublish(ch, "sentinel")
        for i, s in enumerate(subs):
            await s.wait_sentinel(ch, timeout=10)
        for i, s in enumerate(subs):
            pubs = s.pubs(ch)[:-1]
            assert _offsets(pubs) == list(range(1, n + 1)), (
                f"subscriber {i} (node{i // 2}): offsets {_offsets(pubs)[:20]}... not 1..{n}")
            assert [p["data"] for p in pubs] == [by_offset[o] for o in range(1, n + 1)]
            for p in pubs:
                if "ws" in p["data"]:  # client publications carry the publisher's info, from any node
                    assert p["info"]["client"] == ws_pubs[p["data"]["ws"]].id, p

    run(main())


def _is_join(client_id, channel):
    return lambda p: p.get("channel") == channel and p.get("join", {}).get("client") == client_id


def _is_leave(client_id, channel):
    return lambda p: p.get("channel") == channel and p.get("leave", {}).get("client") == client_id


def test_presence_is_cluster_wide(cluster):
    """presence / presenceStats on any node (WebSocket and API) list the
    clients of every node; join and leave pushes cross nodes."""
    nodes = cluster.start(3, token_secret=TOKEN_SECRET, config_text=JOIN_LEAVE_YAML)

    async def main():
        ch = "room:cluster"
        alice = await connect(nodes[0], token=user_token(TOKEN_SECRET, "alice", info={"name": "Alice"}))
        bob = await connect(nodes[1], token=user_token(TOKEN_SECRET, "bob"))
        anon = await connect(nodes[2])
        clients = [alice, bob, anon]
        for c in clients:
            await c.subscribe(ch)
        expected = {alice.id: "alice", bob.id: "bob", anon.id: ""}

        def ok_presence(pres):
            return ({cid: v.get("user") for cid, v in pres["clients"].items()} == expected
                    and pres["clients"][alice.id].get("info") == {"name": "Alice"})

        for i, node in enumerate(nodes):
            await _eventually(lambda: clients[i].result("presence", {"channel": ch}), ok_presence, 5,
                              f"WS presence on node{i}")
            await _eventually(lambda: node.aapi_result("presence", {"channel": ch}), ok_presence, 5,
                              f"API presence on node{i}")
            await _eventually(lambda: clients[i].result("presenceStats", {"channel": ch}),
                              lambda s: s == {"clients": 3, "users": 3}, 5, f"WS presenceStats on node{i}")
            await _eventually(lambda: node.aapi_result("presenceStats", {"channel": ch}),
                              lambda s: s == {"clients": 3, "users": 3}, 5, f"API presenceStats on node{i}")

        # A second connection of alice, on node2: join pushes on node0 and node1.
        alice2 = await connect(nodes[2], token=user_token(TOKEN_SECRET, "alice"))
        await alice2.subscribe(ch)
        for watcher in (alice, bob, anon):
            j = await watcher.wait_push(_is_join(alice2.id, ch), what="join push from another node")
            assert j["join"]["user"] == "alice", j
        for node in nodes:
            await _eventually(lambda: node.aapi_result("presenceStats", {"channel": ch}),
                              lambda s: s == {"clients": 4, "users": 3}, 5, "presenceStats after 2nd alice")

        # Unsubscribe on node2 -> leave on node0 and node1.
        await alice2.result("unsubscribe", {"channel": ch})
        for watcher in (alice, bob):
            await watcher.wait_push(_is_leave(alice2.id, ch), what="leave push (unsubscribe) from node2")

        # bob's connection on node1 ends -> leave on node0 and node2; presence drops him everywhere.
        await bob.close()
        for watcher in (alice, anon):
            lv = await watcher.wait_push(_is_leave(bob.id, ch), what="leave push (disconnect) from node1")
            assert lv["leave"]["user"] == "bob"
        for node in nodes:
            await _eventually(lambda: node.aapi_result("presence", {"channel": ch}),
                              lambda p: set(p["clients"]) == {alice.id, anon.id}, 5,
                              "presence without bob")

    run(main())


def test_recovery_on_another_node(cluster):
    """A client subscribed on node0 leaves; publications continue (node2 API,
    node1 WebSocket); it subscribes on node1 with `since` while publishing
    goes on: recovered true, exactly the missed ones, then live ones with no
    gap and no duplicate at the seam."""
    nodes = cluster.start(3)

    async def main():
        ch = "rec:cluster"
        a = await connect(nodes[0])
        sub = await a.subscribe(ch)
        epoch = sub["epoch"]
        for i in range(1, 6):
            res = await nodes[2].apublish(ch, {"n": i})
            assert res["offset"] == i and res["epoch"] == epoch, (
                f"publish on node2 {res} vs subscribe result on node0 {sub}")
        await a.wait_pubs(ch, 5)
        position = {"offset": a.pubs(ch)[-1]["offset"], "epoch": epoch}
        await a.close()

        ws_pub = await connect(nodes[1])
        for i in range(6, 21):
            assert (await ws_pub.publish(ch, {"n": i}))["offset"] == i

        total = 80
        started = asyncio.Event()

        async def keep_publishing():
            for i in range(21, total + 1):
                target = nodes[2] if i % 2 else nodes[0]
                assert (await target.apublish(ch, {"n": i}))["offset"] == i
                if i >= 23:
                    started.set()  # the subscribe below happens while publishing goes on
                await asyncio.sleep(0.005)

        pub_task = asyncio.create_task(keep_publishing())
        await asyncio.wait_for(started.wait(), 10)
        b = await connect(nodes[1])
        res = await b.subscribe(ch, since=position)
        assert res["recovered"] is True, res
        assert res["epoch"] == epoch
        recovered = res["publications"]
        assert _offsets(recovered) == list(range(6, res["offset"] + 1)), _offsets(recovered)
        await asyncio.wait_for(pub_task, 20)
        # A sentinel published after everything else: once it is in, a late duplicate would be too.
        assert (await nodes[0].apublish(ch, "sentinel"))["offset"] == total + 1
        await b.wait_until(lambda: b.pubs(ch) and b.pubs(ch)[-1]["data"] == "sentinel", 10,
                           f"live publications up to {total} and the sentinel")
        live = b.pubs(ch)
        assert live[-1]["offset"] == total + 1, live[-3:]
        seen = recovered + live[:-1]
        assert _offsets(seen) == list(range(6, total + 1)), (
            f"recovered {_offsets(recovered)[-3:]} + live {_offsets(b.pubs(ch))[:5]}...: gap or dup at the seam")
        assert [p["data"] for p in seen] == [{"n": i} for i in range(6, total + 1)]

    run(main())


# --------------------------------------------------------------------------
# Node registry and server API across nodes
# --------------------------------------------------------------------------


def test_info_lists_every_node_and_drops_a_killed_one(cluster):
    """/api/info on any node lists every node with its figures; a node killed
    with SIGKILL leaves the list within 10 s (registry TTL ~6 s)."""
    nodes = cluster.start(3)

    async def main():
        c0 = await connect(nodes[0])
        c1 = [await connect(nodes[1]) for _ in range(2)]
        await c0.subscribe("info:a")
        want_conns = {"node0": 1, "node1": 2, "node2": 0}

        def complete(info):
            by_name = {e.get("name"): e for e in info["nodes"]}
            return (len(info["nodes"]) == 3 and set(by_name) == set(want_conns)
                    and all(by_name[k].get("connections") == v for k, v in want_conns.items()))

        infos = []
        for i, node in enumerate(nodes):
            infos.append(await _eventually(lambda: node.aapi_result("info", {}), complete, 8,
                                           f"info on node{i} listing 3 nodes with their connections"))
        ids = None
        for info in infos:
            for e in info["nodes"]:
                assert INFO_KEYS <= set(e), f"info entry lacks {INFO_KEYS - set(e)}: {e}"
                assert e["draining"] is False
            by_name = {e["name"]: e["id"] for e in info["nodes"]}
            assert ids is None or by_name == ids, "nodes disagree on node ids"
            ids = by_name
        assert len(set(ids.values())) == 3, f"node ids not distinct: {ids}"
        assert ids["node0"] == c0.info["node"] and ids["node1"] == c1[0].info["node"], (ids, c0.info)

        victim = nodes[2]
        victim.signal(signal.SIGKILL)
        assert victim.wait_exit(5) is not None
        t_kill = time.monotonic()
        for i in (0, 1):
            remaining = 10 - (time.monotonic() - t_kill)
            info = await _eventually(lambda: nodes[i].aapi_result("info", {}),
                                     lambda info: ids["node2"] not in {e["id"] for e in info["nodes"]},
                                     max(0.5, remaining), f"node2 gone from info on node{i}", interval=0.25)
            assert {e["name"] for e in info["nodes"]} == {"node0", "node1"}, info
        print(f"killed node left the registry after {time.monotonic() - t_kill:.1f} s")

    run(main())


def test_api_disconnect_and_unsubscribe_reach_other_nodes(cluster):
    """/api/disconnect (by client, by user) and /api/unsubscribe sent to node0
    act on clients held by node1 and node2."""
    nodes = cluster.start(3, token_secret=TOKEN_SECRET)
    api = nodes[0]

    async def main():
        victim = await connect(nodes[1])
        bystander = await connect(nodes[1])
        assert await api.aapi_result("disconnect", {"client": victim.id}) == {}
        assert await victim.wait_closed() == 3502
        assert not bystander.closed.is_set()
        assert await bystander.result("ping", {}) == {}

        f1 = await connect(nodes[1], token=user_token(TOKEN_SECRET, "frank"))
        f2 = await connect(nodes[2], token=user_token(TOKEN_SECRET, "frank"))
        g = await connect(nodes[1], token=user_token(TOKEN_SECRET, "grace"))
        for c in (f1, f2, g):
            await c.subscribe("u:room")
            await c.subscribe("u:other")

        assert await api.aapi_result("unsubscribe", {"user": "frank", "channel": "u:room"}) == {}
        for c in (f1, f2):
            p = await c.wait_push(lambda m: m.get("channel") == "u:room" and "unsubscribe" in m,
                                  what="unsubscribe push from another node's API")
            assert p["unsubscribe"]["code"] == 2000, p
        await api.apublish("u:room", "after-unsub")
        await api.apublish("u:other", "marker")
        for c in (f1, f2):
            await c.wait_pub("u:other")
            assert c.pubs("u:room") == [], "unsubscribed user still receives"
        assert (await g.wait_pub("u:room"))["data"] == "after-unsub"

        assert await api.aapi_result("disconnect", {"user": "frank"}) == {}
        assert await f1.wait_closed() == 3502
        assert await f2.wait_closed() == 3502
        # A sentinel after the disconnect: had g been disconnected too, its close would come first.
        await api.apublish("u:room", "sentinel")
        await g.wait_sentinel("u:room")
        assert not g.closed.is_set()
        assert await g.result("ping", {}) == {}

    run(main())


# --------------------------------------------------------------------------
# Failures during traffic
# --------------------------------------------------------------------------


def _urls_starting_at(nodes, first):
    return [first.ws_url] + [n.ws_url for n in nodes if n is not first]


def test_node_sigkill_during_publishing_loses_nothing(cluster):
    """Publications at 50/s (HTTP API of the two survivors, 300 in all) on a
    history channel; node2, holding 3 of the subscribers, is SIGKILLed after
    ~100. Its clients reconnect to a survivor and re-subscribe with `since`.
    Every subscriber ends with offsets 1..300 exactly once, in order, in one
    epoch, with the acknowledged data, recovered true, never told of a loss."""
    nodes = cluster.start(3, config_text=BIG_HISTORY_YAML)
    victim, survivors = nodes[2], nodes[:2]
    ch = "big:steady"
    count = 300

    async def main():
        subs = ([ResilientSubscriber(_urls_starting_at(nodes, victim), [ch], name=f"on-node2-{i}")
                 for i in range(3)]
                + [ResilientSubscriber(_urls_starting_at(nodes, s), [ch], name=f"on-{s.name}")
                   for s in survivors])
        for s in subs:
            await s.start()
        assert [s.connections[0]["url"] for s in subs[:3]] == [victim.ws_url] * 3
        pub = ApiPublisher(list(survivors), ch, rate=50, count=count, max_seconds=30).start()
        await pub.wait_acked(100, 15)
        victim.signal(signal.SIGKILL)
        assert victim.wait_exit(5) is not None
        await pub.wait(40)
        assert not pub.failed, f"publishes failed with a healthy broker: {pub.failed[:5]}"
        assert [a["offset"] for a in pub.acked] == list(range(1, count + 1))
        epochs = {a["epoch"] for a in pub.acked}
        assert len(epochs) == 1, epochs
        epoch = epochs.pop()
        for s in subs:
            await s.wait_position(ch, count, epoch, timeout=15)
        # A sentinel after everything: a late duplicate would arrive before it.
        sentinel = await survivors[0].apublish(ch, "sentinel")
        assert (sentinel["offset"], sentinel["epoch"]) == (count + 1, epoch), sentinel
        for s in subs:
            await s.wait_position(ch, count + 1, epoch, timeout=15)
        for s in subs:
            await s.stop()

        data = {a["offset"]: a["data"] for a in pub.acked}
        data[count + 1] = "sentinel"
        for s in subs:
            assert stream_problems(s, ch) == [], s.describe(ch)
            assert s.received(ch) == [(o, epoch) for o in range(1, count + 2)], s.describe(ch)
            assert [p["data"] for p in s.pubs(ch)] == [data[o] for o in range(1, count + 2)]
            assert s.told(ch) == [], f"told of a loss although history held everything: {s.describe(ch)}"
        for s in subs[:3]:
            assert len(s.connections) >= 2, f"{s.name} never reconnected: {s.describe(ch)}"
            assert s.connections[-1]["url"] != victim.ws_url
            resubs = [e for e in s.events[ch] if e["kind"] == "sub" and e["since"] is not None]
            assert resubs and all(e["recovered"] is True for e in resubs), s.describe(ch)
            missed = sum(len(e["recovered_offsets"]) for e in resubs)
            print(f"{s.name}: reconnected to {s.connections[-1]['node']}, recovered {missed} publications")
        for s in subs[3:]:
            assert len(s.connections) == 1, f"{s.name} on a survivor was disconnected: {s.describe(ch)}"

    run(main(), timeout=90)


def silent_loss_problems(sub: ResilientSubscriber, ch: str, acked: list[dict], epoch_rank: dict) -> list[str]:
    """The "nothing silently missed" rule of test_redis_restart_during_traffic.

    Publications are ordered by key(P) = (rank of P's epoch, P's offset), an
    epoch's rank being the order in which epochs were first observed (by the
    publisher's acknowledgements or by any subscriber). For every
    ACKNOWLEDGED publication P = (epoch E, offset o) and every subscriber S:
    either S received (E, o), or S's event stream holds a "told" event
    (an `unsubscribe` push with code 2500, a subscribe result with
    `recovered: false`, or a close with code 3005) strictly after the last
    publication S received with a key below key(P) (S's last received
    offset before P) and strictly before the first publication S received
    with a key above it (so a hole is never delivered silently, even if told
    later). An S that received nothing after P must have been told after
    its last publication before P."""
    evs = sub.events[ch]
    received = {}
    keyed = []  # (stream index, key) of every pub
    for i, e in enumerate(evs):
        if e["kind"] == "pub":
            received[(e["epoch"], e["offset"])] = i
            keyed.append((i, (epoch_rank.get(e["epoch"], len(epoch_rank)), e["offset"])))
    told_at = [i for i, e in enumerate(evs) if is_told(e)]
    out = []
    for a in acked:
        if (a["epoch"], a["offset"]) in received:
            continue
        k = (epoch_rank[a["epoch"]], a["offset"])
        before = [i for i, kk in keyed if kk < k]
        after = [i for i, kk in keyed if kk > k]
        p = max(before) if before else -1
        q = min(after) if after else len(evs)
        if not any(p < t < q for t in told_at):
            out.append(f"{sub.name}: missed acknowledged ({a['epoch']}, {a['offset']}) seq {a['seq']} silently "
                       f"(last pub before it at event #{p}, next after it at #{q}, told at {told_at})")
    return out


def test_redis_restart_during_traffic(cluster):
    """Redis is SIGKILLed (all data lost: no persistence) and restarted on the
    same port while publications flow at 50/s through the API of both nodes,
    to 4 ResilientSubscribers (2 per node).

    - Publishes may fail during the outage, but only as an API error with
      code 100 (temporary); the publisher counts the acknowledged ones only.
      No two acknowledgements name the same (epoch, offset): history lost
      means a new epoch.
    - Each subscriber's own stream is consistent (`stream_problems`: each
      publication right after the previous position, in its epoch; recovered
      true continues exactly from `since`).
    - Rule, for every subscriber and every ACKNOWLEDGED publication P with
      epoch E and offset o: the subscriber received (E, o) with the
      acknowledged data, or it was told (an `unsubscribe` push with code
      2500, a subscribe result with `recovered: false`, or a close 3005)
      at a point after the last publication it received before P and before
      the first one it received after P (see `silent_loss_problems` for the
      ordering of publications across epochs).
    - The nodes come back: within 10 s of Redis being back, every subscriber
      has received a publication acknowledged after Redis came back (steady
      ones, or markers published every 0.2 s once the steady publisher is
      done). A last publication reaches everyone; then every subscriber's
      position recovers (a fresh subscribe with `since` = that position
      gives recovered true, nothing missed). Both nodes are still running."""
    nodes = cluster.start(2, config_text=BIG_HISTORY_YAML)
    redis = cluster.redis
    ch = "big:redis"

    async def main():
        subs = [ResilientSubscriber(_urls_starting_at(nodes, n), [ch], name=f"{n.name}-{i}")
                for n in nodes for i in range(2)]
        for s in subs:
            await s.start()
        pub = ApiPublisher(list(nodes), ch, rate=50, count=350, max_seconds=25, request_timeout=5).start()
        await pub.wait_acked(100, 15)
        redis.kill()
        t_kill = time.monotonic()
        await asyncio.sleep(2)  # not a synchronisation: how long Redis stays down
        await asyncio.to_thread(redis.restart)
        t_back = time.monotonic()

        # The nodes come back: within 10 s of Redis being back every subscriber
        # has received a publication acknowledged after that (the steady ones,
        # or markers once the steady publisher is done).
        markers = 0

        async def marker() -> tuple[int, str] | None:
            nonlocal markers
            markers += 1
            node = nodes[markers % 2]
            out = await pub.publish_once(node, {"marker": markers})
            if "result" not in out:
                return None
            res = out["result"]
            pub.acked.append({"seq": f"marker{markers}", "offset": res["offset"], "epoch": res["epoch"],
                              "node": node.name, "data": {"marker": markers}, "t": time.monotonic()})
            return res["offset"], res["epoch"]

        t_all = None
        while t_all is None and time.monotonic() - t_back < 10:
            post = {(a["offset"], a["epoch"]) for a in pub.acked if a["t"] > t_back}
            if post and all(any(k in post for k in s.received(ch)) for s in subs):
                t_all = time.monotonic() - t_back
                break
            if not pub.running:
                await marker()
            await asyncio.sleep(0.2)
        assert t_all is not None, (f"within 10 s of Redis coming back, not every subscriber received a "
                                   f"publication acknowledged since: {[s.describe(ch) for s in subs]}")
        await pub.wait(40)

        # One last publication that everyone must get, so that all end at the same position.
        last = None
        for _ in range(20):
            last = await marker()
            if last is not None:
                break
            await asyncio.sleep(0.25)
        assert last is not None, f"no publish succeeded after the steady run: {pub.failed[-3:]}"
        for s in subs:
            await s.wait_for(lambda s=s: last in s.received(ch), 10, f"final publication {last}")
        # `last` is the sentinel: published after everything, any late duplicate came before it.
        for s in subs:
            await s.stop()

        assert all(n.alive() for n in nodes), "a node died when Redis went away"
        bad_failures = [f for f in pub.failed
                        if not (f["kind"] == "error" and isinstance(f["detail"], dict)
                                and f["detail"].get("code") == 100 and f["detail"].get("temporary") is True)]
        assert not bad_failures, f"publish failures other than error 100 temporary: {bad_failures[:5]}"
        keys = [(a["epoch"], a["offset"]) for a in pub.acked]
        assert len(set(keys)) == len(keys), "two acknowledged publications share (epoch, offset)"
        first_seen = {}
        for a in pub.acked:
            first_seen.setdefault(a["epoch"], a["t"])
        for s in subs:
            for e in s.pubs(ch):
                first_seen[e["epoch"]] = min(first_seen.get(e["epoch"], e["t"]), e["t"])
        epoch_rank = {ep: i for i, ep in enumerate(sorted(first_seen, key=first_seen.get))}
        data = {(a["epoch"], a["offset"]): a["data"] for a in pub.acked}

        problems = []
        for s in subs:
            problems += stream_problems(s, ch)
            problems += silent_loss_problems(s, ch, pub.acked, epoch_rank)
            for e in s.pubs(ch):
                if (e["epoch"], e["offset"]) in data and e["data"] != data[(e["epoch"], e["offset"])]:
                    problems.append(f"{s.name}: ({e['epoch']}, {e['offset']}) carries {e['data']}, "
                                    f"acknowledged as {data[(e['epoch'], e['offset'])]}")
        assert not problems, "\n".join(problems[:20] + [s.describe(ch) for s in subs])

        # Every subscriber's final position is one the cluster recovers from.
        for i, s in enumerate(subs):
            off, ep = s.position[ch]
            c = await connect(nodes[i % 2])
            res = await c.subscribe(ch, since={"offset": off, "epoch": ep})
            assert res["recovered"] is True and res["publications"] == [], (s.name, s.position[ch], res)
            await c.close()

        told = {s.name: sorted({(e["kind"], e.get("code"), e.get("recovered")) for e in s.told(ch)},
                               key=str) for s in subs}
        print(f"acked {len(pub.acked)}, failed {len(pub.failed)} (outage {t_back - t_kill:.1f} s), "
              f"epochs {len(epoch_rank)}, everyone served again {t_all:.1f} s after Redis came back; "
              f"told: {told}")

    run(main(), timeout=120)
