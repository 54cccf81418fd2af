"""`switchboard balance` in front of real `switchboard serve` nodes (docs/balancer.md).

Every process runs on loopback ports picked at run time and is stopped at teardown. Each test also
checks that the balancer's open file descriptors return to what they were before its clients came."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter

import pytest

from balancerlib import (admin_nodes, fd_count, metrics, node_id, node_ws_connections,
                         raw_exchange, rss_anon_kb, status_of, wait_until)
from sbclient import SSEStream, close_all_sse, connect, connect_url, lp_poll, open_client, run



def start_nodes(node_factory, n: int):
    return [node_factory.start(node_name=f"n{i}") for i in range(n)]


def idle_fds(balancer, window: float = 1.0) -> int:
    """The most fds the balancer holds while no client is connected, sampled over `window` s: its
    health checks (one per node every 0.2 s here) open sockets of their own, and on a loaded
    machine one is nearly always in flight. A single sample taken between two checks made
    wait_fds fail under load with the count 3-4 above it for 15 s on end."""
    top = 0
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        top = max(top, fd_count(balancer.pid))
        time.sleep(0.05)  # the sampling interval of a bounded window, not a synchronisation
    return top


def wait_fds(balancer, baseline: int, timeout: float = 15.0, slack: int = 1) -> None:
    """Until the balancer's fds are back to `baseline` (from idle_fds); `slack` 1 for the admin
    connection of the test's last query, which the balancer may not have closed yet."""
    wait_until(lambda: fd_count(balancer.pid) <= baseline + slack, timeout,
               f"balancer fds back to {baseline} + {slack} (now {fd_count(balancer.pid)})")


def wait_clients_gone(balancer, timeout: float = 15.0) -> None:
    wait_until(lambda: admin_nodes(balancer)["clients"] == 0, timeout, "no client connection left in the balancer")


async def open_many(balancer, count: int, path: str = "/ws"):
    clients = []
    for _ in range(count):
        c = await connect_url(f"ws://127.0.0.1:{balancer.port}{path}")
        clients.append(c)
    return clients


async def close_all(clients) -> None:
    for c in clients:
        await c.close()


# --------------------------------------------------------------------------
# transports through the balancer
# --------------------------------------------------------------------------


def test_websocket_sse_and_longpoll_through_the_balancer(cluster, balancers):
    nodes = cluster.start(2)
    bal = balancers.start(nodes, "--algorithm", "round-robin")
    bal.api_key = cluster.api_key  # so that bal.api_result() talks to the nodes' HTTP API through it
    baseline = idle_fds(bal)

    async def websocket_part():
        sub = await connect(bal)
        pub = await connect(bal)
        assert sub.info["node"] != pub.info["node"], "round robin put both clients on one node"
        await sub.subscribe("chat:bal")
        for i in range(5):
            await pub.publish("chat:bal", {"i": i})
        got = await sub.wait_pubs("chat:bal", 5)
        assert [p["data"]["i"] for p in got] == list(range(5))
        # The HTTP API through the balancer too.
        assert bal.api_result("publish", {"channel": "chat:bal", "data": {"i": 5}})["offset"] == 6
        got = await sub.wait_pubs("chat:bal", 6)
        assert got[-1]["data"] == {"i": 5}
        await close_all([sub, pub])

    run(websocket_part())

    # SSE: the stream on one node, commands POSTed through the balancer (round robin: some land on the
    # other node, which forwards them through Redis).
    stream = SSEStream(bal, connect={})
    try:
        assert stream.status == 200, stream.status_line
        stream.wait_connected()
        r = stream.post({"id": 2, "subscribe": {"channel": "chat:sse"}})
        assert r.status_code == 202, r.text
        stream.wait_reply(2)
        for i in range(3):
            r = stream.post({"id": 3 + i, "publish": {"channel": "chat:sse", "data": {"n": i}}})
            assert r.status_code == 202, r.text
        assert [p["data"]["n"] for p in stream.wait_pubs("chat:sse", 3)] == [0, 1, 2]
    finally:
        close_all_sse()

    # Long-poll: a first poll gets the position; a waiting poll gets the next publication.
    r = lp_poll(bal, {"subs": {"chat:lp": {}}, "timeout": 2})
    assert r.status_code == 200, r.text
    position = next(it["position"] for it in r.json() if "position" in it)
    result: dict = {}

    def waiting_poll():
        result["r"] = lp_poll(bal, {"subs": {"chat:lp": position}, "timeout": 5})

    t = threading.Thread(target=waiting_poll)
    t.start()
    time.sleep(0.3)  # not a synchronisation: the poll returns the publication whether or not it was waiting
    bal.api_result("publish", {"channel": "chat:lp", "data": "x"})
    t.join(15)
    assert not t.is_alive()
    assert result["r"].status_code == 200, result["r"].text
    assert [it["pub"]["data"] for it in result["r"].json() if "pub" in it] == ["x"]
    wait_clients_gone(bal)
    wait_fds(bal, baseline)


# --------------------------------------------------------------------------
# distribution
# --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["round-robin", "least-conn", "p2c", "least-time"])
def test_distribution_over_four_nodes(node_factory, balancers, algorithm):
    nodes = start_nodes(node_factory, 4)
    ids = {node_id(n): n for n in nodes}
    bal = balancers.start(nodes, "--algorithm", algorithm)
    baseline = idle_fds(bal)
    total = 40

    async def body():
        clients = await open_many(bal, total)
        try:
            per_node = Counter(c.info["node"] for c in clients)
            assert set(per_node) <= set(ids), per_node
            # The nodes' own counts agree with what the clients were told.
            for nid, n in ids.items():
                wait_until(lambda: node_ws_connections(n) == per_node.get(nid, 0), 5,
                           f"node {nid} reporting {per_node.get(nid, 0)} websocket connections")
            counts = sorted(per_node.get(nid, 0) for nid in ids)
            if algorithm in ("round-robin", "least-conn"):
                assert counts == [10, 10, 10, 10], per_node
            elif algorithm == "p2c":
                assert counts[0] >= 6 and counts[-1] <= 14, per_node
            else:
                # least-time: (active + 1) x response time; the times differ by scheduling noise here, so
                # only the spread's shape is checked: no node takes most, and measured times are reported.
                assert sum(1 for c in counts if c > 0) >= 3 and counts[-1] <= 25, per_node
                times = [n["responseTimeSeconds"] for n in admin_nodes(bal)["nodes"] if n["picks"] > 0]
                assert all(isinstance(t, float) and 0 < t < 5 for t in times), times
            # The balancer's own table says the same.
            table = {n["port"]: n["active"] for n in admin_nodes(bal)["nodes"]}
            assert {ids[nid].port: per_node.get(nid, 0) for nid in ids} == table
        finally:
            await close_all(clients)

    run(body())
    wait_clients_gone(bal)
    wait_until(lambda: all(n["active"] == 0 for n in admin_nodes(bal)["nodes"]), 5, "no node connection left")
    wait_fds(bal, baseline)


def test_hashing_keeps_a_channel_on_one_node(node_factory, balancers):
    nodes = start_nodes(node_factory, 4)
    # A generous bound so that this test sees the ring alone (the bound is unit-tested).
    bal = balancers.start(nodes, "--algorithm", "hash", "--hash-key", "channel", "--hash-balance-factor", "1000")

    async def body():
        placement: dict[str, set[str]] = {}
        clients = []
        try:
            # 40 channels: with a ring's even shares, 12 landed on 2 of 4 nodes about once in 700 runs
            # (it happened in CI); 40 on 2 or fewer is about 5e-12.
            for ch in [f"chat:room{i}" for i in range(40)]:
                for _ in range(2):
                    c = await connect_url(f"ws://127.0.0.1:{bal.port}/ws?channel={ch}")
                    clients.append(c)
                    placement.setdefault(ch, set()).add(c.info["node"])
            assert all(len(v) == 1 for v in placement.values()), placement
            used = {next(iter(v)) for v in placement.values()}
            assert len(used) >= 3, f"40 channels on only {len(used)} of 4 nodes: {placement}"
        finally:
            await close_all(clients)
        return placement

    first = run(body())
    wait_clients_gone(bal)
    # The same channels land on the same nodes again (no state involved: the ring is stable).
    again = run(body())
    assert first == again


def test_hash_bounded_load_spreads_a_hot_channel(node_factory, balancers):
    nodes = start_nodes(node_factory, 4)
    bal = balancers.start(nodes, "--algorithm", "hash", "--hash-balance-factor", "125")

    async def body():
        clients = []
        try:
            for i in range(40):
                ch = "chat:hot" if i % 2 == 0 else f"chat:c{i}"
                clients.append(await connect_url(f"ws://127.0.0.1:{bal.port}/ws?channel={ch}"))
            per_node = Counter(c.info["node"] for c in clients)
            mean = 40 / 4
            assert max(per_node.values()) <= 1.25 * mean + 1, per_node
        finally:
            await close_all(clients)

    run(body())


# --------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------


class FailingNode:
    """A listener that answers the balancer's health check (`GET /readyz`) with 200 and ends every
    other connection without a byte once it has read the request head: with a reset (`mode="reset"`,
    SO_LINGER 0) or a plain FIN (`mode="eof"`). What a node looks like to the balancer when it dies
    between accepting a connection and answering it. `requests` lists the other request lines.
    `mode="record"` is a healthy node instead: it reads each request's `Content-Length` body, keeps it
    in `bodies` and answers 200."""

    def __init__(self, mode: str):
        self.mode = mode
        self.requests: list[str] = []
        self.bodies: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                head = b""
                try:
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        got = conn.recv(4096)
                        if not got:
                            break
                        head += got
                except OSError:
                    continue
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                if line.startswith("GET /readyz"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    continue
                self.requests.append(line)
                if self.mode == "record":
                    head, _, body = head.partition(b"\r\n\r\n")
                    length = next((int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")[1:]
                                   if h.lower().startswith(b"content-length:")), 0)
                    try:
                        while len(body) < length:
                            got = conn.recv(65536)
                            if not got:
                                break
                            body += got
                    except OSError:
                        continue
                    self.bodies.append(body)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    continue
                if self.mode == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def failing_nodes():
    started: list[FailingNode] = []

    def start(mode: str) -> FailingNode:
        n = FailingNode(mode)
        started.append(n)
        return n

    try:
        yield start
    finally:
        for n in started:
            n.stop()


@pytest.mark.parametrize("mode", ["reset", "eof"])
def test_a_node_that_ends_the_tunnel_before_answering_is_replaced(node_factory, balancers, failing_nodes, mode):
    """Issue 14: a node that accepts and then resets (or closes) before any byte reached the client is
    a passive failure; the balancer sends the request to another node instead of closing the client."""
    failing = failing_nodes(mode)
    real = node_factory.start(node_name="real")
    bal = balancers.start([failing, real], "--algorithm", "round-robin")
    baseline = idle_fds(bal)

    async def body():
        # Round robin sends one of the first two to the failing node; every client still connects.
        clients = await open_many(bal, 4)
        assert {c.info["node"] for c in clients} == {node_id(real)}
        await close_all(clients)

    run(body())
    assert len(failing.requests) >= 1 and all(r.startswith("GET /ws ") for r in failing.requests), failing.requests
    m = metrics(bal)
    assert m["switchboard_balancer_ended_before_response_total"] == len(failing.requests)
    assert m['switchboard_balancer_refused_total{reason="connect_failed"}'] == 0
    wait_clients_gone(bal)
    wait_fds(bal, baseline)


def test_a_body_sent_with_the_head_reaches_the_node_whole(balancers, failing_nodes):
    """A client that sends its head and a large body at once: what arrives while the balancer connects to
    the node is held (up to a cap, then reads wait for the tunnel) and forwarded after the head, byte for
    byte, in order."""
    node = failing_nodes("record")
    bal = balancers.start([node])
    body = bytes((i * 7 + i // 251) % 256 for i in range(200_000))
    head = f"POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    resp, _ = raw_exchange(bal.port, head + body, timeout=10)
    assert status_of(resp) == 200, resp[:200]
    assert node.requests == ["POST /api/publish HTTP/1.1"]
    assert len(node.bodies) == 1 and node.bodies[0] == body


def test_a_request_not_safe_to_repeat_is_not_sent_twice(balancers, failing_nodes):
    """A POST whose node ends the tunnel before answering may have been acted on: the balancer answers
    502 itself and does not send it to another node, nor count it against the node (a client must not
    be able to get nodes ejected). A GET behind the same lone failing node gets 502 after one attempt."""
    failing = failing_nodes("reset")
    other = failing_nodes("reset")
    bal = balancers.start([failing, other], "--algorithm", "round-robin")
    body = b'{"channel":"chat:x","data":1}'
    resp, _ = raw_exchange(bal.port, b"POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                           + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, timeout=5)
    assert status_of(resp) == 502, resp[:200]
    assert failing.requests + other.requests == ["POST /api/publish HTTP/1.1"]
    m = metrics(bal)
    assert m['switchboard_balancer_refused_total{reason="no_response"}'] == 1
    assert m["switchboard_balancer_ended_before_response_total"] == 1
    # A GET is tried on both nodes (each ends it), then 502.
    resp, _ = raw_exchange(bal.port, b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5)
    assert status_of(resp) == 502, resp[:200]
    assert sorted(failing.requests + other.requests) == ["GET /ws HTTP/1.1", "GET /ws HTTP/1.1", "POST /api/publish HTTP/1.1"]
    m = metrics(bal)
    assert m["switchboard_balancer_ended_before_response_total"] == 3
    assert m['switchboard_balancer_refused_total{reason="connect_failed"}'] == 1


def test_node_sigkill_failover(node_factory, balancers):
    nodes = start_nodes(node_factory, 2)
    victim, survivor = nodes
    bal = balancers.start(nodes, "--algorithm", "round-robin")
    baseline = idle_fds(bal)

    async def body():
        clients = await open_many(bal, 4)
        on_victim = [c for c in clients if c.info["node"] == node_id(victim)]
        assert len(on_victim) == 2
        victim.signal(signal.SIGKILL)
        t0 = time.monotonic()
        for c in on_victim:
            await c.wait_closed(timeout=5)
        assert time.monotonic() - t0 < 4, "tunnels to the killed node not closed within ~1 s (generous on a loaded machine)"
        # New clients all get through, on the survivor, even before the health check noticed (connect
        # refused -> retry another node).
        fresh = await open_many(bal, 6)
        assert {c.info["node"] for c in fresh} == {node_id(survivor)}
        await close_all(clients + fresh)

    run(body())
    wait_until(lambda: not next(n for n in admin_nodes(bal)["nodes"] if n["port"] == victim.port)["up"], 15,
               "the killed node marked down by the health check")
    m = metrics(bal)
    assert m[f'switchboard_balancer_node_up{{node="127.0.0.1:{victim.port}"}}'] == 0
    wait_clients_gone(bal)
    wait_fds(bal, baseline)


def test_all_nodes_down_answers_503_at_once(node_factory, balancers):
    nodes = start_nodes(node_factory, 2)
    bal = balancers.start(nodes)
    for n in nodes:
        n.signal(signal.SIGKILL)
        n.wait_exit(5)
    # Before the checks notice: every connect is refused, the balancer gives up with 502 quickly.
    resp, first = raw_exchange(bal.port, b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5)
    assert status_of(resp) in (502, 503), resp[:200]
    assert first < 3.0, f"502 took {first:.3f}s"
    wait_until(lambda: all(not n["up"] for n in admin_nodes(bal)["nodes"]), 5, "both nodes marked down")
    for _ in range(5):
        resp, first = raw_exchange(bal.port, b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5)
        assert status_of(resp) == 503, resp[:200]
        assert first < 2.0, f"503 took {first:.3f}s"
    assert metrics(bal)['switchboard_balancer_refused_total{reason="no_node"}'] >= 5


def test_a_node_comes_back_after_rise(node_factory, balancers):
    nodes = start_nodes(node_factory, 1)
    bal = balancers.start(nodes, "--rise", "2", "--fall", "2")
    port = nodes[0].port
    nodes[0].signal(signal.SIGKILL)
    nodes[0].wait_exit(5)
    wait_until(lambda: not admin_nodes(bal)["nodes"][0]["up"], 5, "node down")
    # A new node on the same port: the same identity, back after two good checks.
    back = node_factory.start("--port", str(port), node_name="back")
    assert back.port == port
    wait_until(lambda: admin_nodes(bal)["nodes"][0]["up"], 5, "node up again")

    async def body():
        c = await connect(bal)
        assert c.info["node"] == node_id(back)
        await c.close()

    run(body())


# --------------------------------------------------------------------------
# hostile clients
# --------------------------------------------------------------------------


def test_slowloris_heads_get_408_at_the_deadline_while_others_connect(node_factory, balancers):
    nodes = start_nodes(node_factory, 2)
    bal = balancers.start(nodes, "--header-timeout", "1.5")
    baseline = idle_fds(bal)
    head = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + b"X-Pad: aaaa\r\n" * 20

    async def slow_one():
        return await asyncio.to_thread(raw_exchange, bal.port, head, 6.0, False, 0.1, 1)

    async def body():
        slow = [asyncio.create_task(slow_one()) for _ in range(20)]
        await asyncio.sleep(0.3)
        # While 20 heads trickle in, normal clients connect and talk at once.
        t0 = time.monotonic()
        clients = await open_many(bal, 5)
        for c in clients:
            await c.call("ping", {})
        assert time.monotonic() - t0 < 3.0
        results = await asyncio.gather(*slow)
        await close_all(clients)
        return results

    results = run(body())
    for resp, first in results:
        assert status_of(resp) == 408, resp[:200]
        assert 1.3 <= first <= 4.0, f"408 after {first:.2f}s, deadline 1.5s"
    assert metrics(bal)['switchboard_balancer_refused_total{reason="head_timeout"}'] == 20
    wait_clients_gone(bal)
    wait_fds(bal, baseline)


MALFORMED = {
    "over 16 KB": b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "10,000 lines": b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 10000 + b"\r\n",
    "no colon": b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: a\n\n",
    "NUL": b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "TLS on the plain port": bytes.fromhex("16030100c4010000c00303") + bytes(range(32)) + b"\x00" * 100,
    "random bytes": bytes((i * 7919 + 13) % 256 for i in range(4096)),
    "obsolete folding": b"GET / HTTP/1.1\r\nA: b\r\n  c\r\n\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_heads_get_400(node_factory, balancers, name):
    nodes = start_nodes(node_factory, 1)
    bal = balancers.start(nodes)
    baseline = idle_fds(bal)
    resp, first = raw_exchange(bal.port, MALFORMED[name], timeout=5)
    assert status_of(resp) == 400, f"{name}: {resp[:200]!r}"
    assert first < 3.0, f"{name}: 400 after {first:.2f}s"
    # No node ever saw the request.
    assert admin_nodes(bal)["nodes"][0]["picks"] == 0
    wait_clients_gone(bal)
    wait_fds(bal, baseline)


def test_max_connections_refuses_cleanly(node_factory, balancers):
    nodes = start_nodes(node_factory, 1)
    bal = balancers.start(nodes, "--max-connections", "5")
    baseline = idle_fds(bal)
    held = [socket.create_connection(("127.0.0.1", bal.port), timeout=5) for _ in range(5)]
    try:
        wait_until(lambda: admin_nodes(bal)["clients"] == 5, 5, "5 clients held")
        for _ in range(20):
            resp, first = raw_exchange(bal.port, b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5)
            assert status_of(resp) == 503, resp[:200]
        assert metrics(bal)['switchboard_balancer_refused_total{reason="max_connections"}'] == 20
    finally:
        for s in held:
            s.close()
    wait_clients_gone(bal)
    resp, _ = raw_exchange(bal.port, b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5)
    assert status_of(resp) == 200, resp[:200]
    wait_clients_gone(bal)
    wait_fds(bal, baseline)


def test_a_full_tls_balancer_does_not_hold_the_connections_it_refuses(node_factory, balancers, tmp_path):
    """Past --max-connections a connection is answered 503 and closed; with TLS that answer would wait
    for a handshake the client may never start, holding a descriptor meanwhile (such connections are
    not counted against the limit, and could pile up to the process's file limit): they are closed
    at once, well before the header timeout (3 s here) that bounded them before."""
    from balancerlib import make_certificate

    cert, key = make_certificate(tmp_path, "ecdsa")
    nodes = start_nodes(node_factory, 1)
    bal = balancers.start(nodes, "--tls-cert", cert, "--tls-key", key, "--max-connections", "2",
                          "--header-timeout", "3", tls=True)
    baseline = idle_fds(bal)
    held = [socket.create_connection(("127.0.0.1", bal.port), timeout=5) for _ in range(2)]
    refused: list[socket.socket] = []
    try:
        wait_until(lambda: admin_nodes(bal)["clients"] == 2, 5, "2 clients held")
        refused = [socket.create_connection(("127.0.0.1", bal.port), timeout=8) for _ in range(5)]
        started = time.monotonic()
        for s in refused:
            try:
                assert s.recv(4096) == b"", "no ClientHello was sent: nothing can come but the end"
            except ConnectionResetError:
                pass
            except socket.timeout:
                raise AssertionError(f"a refused connection was still open after {time.monotonic() - started:.1f} s")
        assert time.monotonic() - started < 1.5, f"the refused connections were closed after {time.monotonic() - started:.1f} s"
        assert metrics(bal)['switchboard_balancer_refused_total{reason="max_connections"}'] == 5
    finally:
        for s in held + refused:
            s.close()
    wait_clients_gone(bal)
    wait_fds(bal, baseline)


def _held_tunnel(port: int) -> tuple[socket.socket, bytes]:
    """A keep-alive `GET /readyz` through the balancer: the socket (its tunnel stays open) and the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n")
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            got = s.recv(4096)
            if not got:
                break
            answer += got
    except OSError:
        pass  # not answered in time (not accepted: the last descriptor was taken): no status
    return s, answer


def test_running_out_of_descriptors_blames_no_node(node_factory, balancers):
    """A balancer out of file descriptors (its own limit, whatever the clients do) answers 503 and
    blames no node: no connect failure counted, no ejection, no failed health check. Before, the
    node side's `socket()` failing with EMFILE counted as the node's connect failure (the client got
    502 and both healthy nodes were ejected) and every health check failed, marking them down."""
    import resource

    nodes = start_nodes(node_factory, 2)
    bal = balancers.start(nodes, "--max-connections", "1000")
    wait_until(lambda: all(n["up"] for n in admin_nodes(bal)["nodes"]), 10, "both nodes up")
    blame = lambda: {n["id"]: (n["connectFailures"], n["ejections"], n["checksFailed"])  # noqa: E731
                     for n in admin_nodes(bal)["nodes"]}
    before = blame()
    # The fewest descriptors it holds idle (no health check's socket in flight).
    baseline = min(fd_count(bal.pid) for _ in range(20) if time.sleep(0.02) is None)
    soft, hard = resource.prlimit(bal.pid, resource.RLIMIT_NOFILE)
    tunnels = 8
    # Room for the baseline and 8 tunnels (two descriptors each) and one more accepted client, not
    # for that client's node side.
    resource.prlimit(bal.pid, resource.RLIMIT_NOFILE, (baseline + 2 * tunnels + 1, hard))
    held: list[socket.socket] = []
    refusals: list[bytes] = []
    try:
        for _ in range(3 * tunnels):  # bounded: a health check in flight can take a descriptor for a moment
            s, answer = _held_tunnel(bal.port)
            if status_of(answer) == 200:
                held.append(s)
                continue
            s.close()
            refusals.append(answer)
            if len(held) >= tunnels - 1:
                break
            time.sleep(0.1)
        assert refusals, f"{len(held)} tunnels and no refusal: the limit did not bite"
        assert any(status_of(r) == 503 and b"out of resources" in r for r in refusals), \
            f"{len(held)} tunnels held, refusals {[r[:60] for r in refusals]}"
        assert not any(status_of(r) == 502 for r in refusals), refusals
        # Every descriptor taken (an idle client), for several health-check rounds: every check
        # fails to open its socket, which says nothing about the nodes.
        idle = socket.create_connection(("127.0.0.1", bal.port), timeout=5)
        time.sleep(1.5)
        idle.close()
        for s in held:
            s.close()
        held = []
        assert blame() == before, "the balancer's own shortage was blamed on the nodes"
        assert all(n["up"] and not n["ejected"] for n in admin_nodes(bal)["nodes"])
        assert metrics(bal)['switchboard_balancer_refused_total{reason="local_resources"}'] >= 1
    finally:
        for s in held:
            s.close()
        resource.prlimit(bal.pid, resource.RLIMIT_NOFILE, (soft, hard))
    resp, _ = raw_exchange(bal.port, b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", timeout=5)
    assert status_of(resp) == 200, resp[:200]
    wait_clients_gone(bal)


class _FakeNode:
    """A node whose health check passes; every other request gets `status` at once and the
    connection closes, or, with `status` None, is held without a byte for 20 s."""

    def __init__(self, status: int | None = None):
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                ready = self.path == "/readyz"
                if not ready and status is None:
                    time.sleep(20)
                    return
                body = b'{"status":"ready"}' if ready else b"broken\n"
                self.send_response(200 if ready else status)
                self.send_header("Content-Length", str(len(body)))
                if not ready:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                self.answer()

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.answer()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_node_that_never_answers_gets_504_at_the_response_deadline(balancers):
    """A node that takes the request and never answers must not hold the client until the tunnel's
    idle timeout (an hour): past --response-timeout the client gets 504 and the node is blamed."""
    node = _FakeNode()
    try:
        bal = balancers.start([node], "--response-timeout", "1")
        resp, first = raw_exchange(bal.port, b"GET /held HTTP/1.1\r\nHost: a\r\n\r\n", timeout=10)
        assert status_of(resp) == 504, resp[:200]
        assert first is not None and 0.9 < first < 5, first
        assert metrics(bal)['switchboard_balancer_refused_total{reason="no_response"}'] >= 1
        # A body still trickling in is not the node's delay: the deadline counts from the last byte.
        s = socket.create_connection(("127.0.0.1", bal.port), timeout=10)
        try:
            started = time.monotonic()
            s.sendall(b"POST /held HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n")
            for _ in range(8):
                time.sleep(0.4)
                s.sendall(b"x")
            last_byte = time.monotonic() - started
            answer = s.recv(4096)
            answered = time.monotonic() - started
            assert status_of(answer) == 504, answer[:200]
            assert answered >= last_byte + 0.9, f"504 after {answered:.1f} s, the body's last byte at {last_byte:.1f} s"
        finally:
            s.close()
        wait_clients_gone(bal)
    finally:
        node.stop()


def _statuses(bal, requests: int) -> Counter:
    """The statuses of `requests` sequential `GET /healthz` through the balancer."""
    statuses = Counter()
    for _ in range(requests):
        resp, _ = raw_exchange(bal.port, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5)
        statuses[status_of(resp)] += 1
    return statuses


def test_a_node_answering_server_errors_is_ejected(node_factory, balancers):
    """A node that answers every request with 500 at once (its /readyz still passes) would take a
    share of the clients forever, more under least connections since it holds none: five 500s in a
    row eject it passively, like connect errors do. 503 (a draining or full node, or a client over
    its limits) never does."""
    good = start_nodes(node_factory, 1)[0]
    broken = _FakeNode(500)
    busy = _FakeNode(503)
    try:
        bal = balancers.start([good, broken], "--algorithm", "least-conn")
        statuses = _statuses(bal, 40)
        # Ejected for 5 s after its fifth error, well after these 40 requests (a fraction of a second).
        assert statuses[500] == 5, statuses
        assert statuses[200] == 35, statuses
        row = next(n for n in admin_nodes(bal)["nodes"] if n["port"] == broken.port)
        assert row["ejected"] and row["serverErrors"] == 5 and row["ejections"] == 1, row
        m = metrics(bal)
        assert m[f'switchboard_balancer_node_server_errors_total{{node="127.0.0.1:{broken.port}"}}'] == 5

        bal503 = balancers.start([good, busy], "--algorithm", "round-robin")
        wait_until(lambda: all(n["up"] for n in admin_nodes(bal503)["nodes"]), 5, "both nodes up")
        statuses = _statuses(bal503, 20)
        # About half each (a pick can see the last tunnel to one node not yet closed and take the
        # other); an ejection after five would leave the busy node with five or six.
        assert 8 <= statuses[503] <= 12, statuses
        row = next(n for n in admin_nodes(bal503)["nodes"] if n["port"] == busy.port)
        assert not row["ejected"] and row["serverErrors"] == 0, row
    finally:
        broken.stop()
        busy.stop()


def test_half_close_is_propagated(node_factory, balancers):
    nodes = start_nodes(node_factory, 1)
    bal = balancers.start(nodes)
    # The client sends its request and shuts its write side: the node still answers in full.
    resp, _ = raw_exchange(bal.port, b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5, shutdown_write=True)
    assert status_of(resp) == 200, resp[:200]
    assert b'"ready"' in resp
    wait_clients_gone(bal)


def test_idle_tunnel_is_closed(node_factory, balancers):
    nodes = start_nodes(node_factory, 1)
    bal = balancers.start(nodes, "--tunnel-idle-timeout", "1")

    async def body():
        busy = await connect(bal)
        idle = await open_client(bal)
        t0 = time.monotonic()
        # The busy one talks every 0.3 s and stays; the idle one is cut after ~1 s.
        while idle.closed_at is None and time.monotonic() - t0 < 4:
            await busy.call("ping", {})
            await asyncio.sleep(0.3)
        await idle.wait_closed(timeout=1)
        elapsed = idle.closed_at - t0
        assert 0.8 <= elapsed <= 3.5, f"idle tunnel closed after {elapsed:.2f}s"
        assert busy.closed_at is None
        await busy.close()

    run(body())


def test_stalled_node_bounds_balancer_memory(node_factory, balancers):
    """A node SIGSTOPped while a client pushes 40 MB: the balancer stops reading from the client once the
    node side's write buffer is above its high water mark, so its memory stays flat (the rest waits in
    kernel socket buffers and then in the client)."""
    nodes = start_nodes(node_factory, 1)
    node = nodes[0]
    bal = balancers.start(nodes, check_interval=30)
    baseline_fds = idle_fds(bal)
    node.signal(signal.SIGSTOP)
    try:
        before = rss_anon_kb(bal.pid)
        s = socket.create_connection(("127.0.0.1", bal.port), timeout=5)
        s.sendall(b"POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n")
        s.setblocking(False)
        chunk = b"x" * 65536
        sent = 0
        deadline = time.monotonic() + 6
        stalled_since = None
        while sent < 40 * 1024 * 1024 and time.monotonic() < deadline:
            try:
                sent += s.send(chunk)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break  # nobody reads any more: the whole path is full
                time.sleep(0.01)
        after = rss_anon_kb(bal.pid)
        print(f"sent {sent >> 20} MiB, balancer RssAnon {before} -> {after} KiB")
        assert sent < 40 * 1024 * 1024, "all 40 MB went in: nothing held the client back"
        assert after - before < 8 * 1024, (
            f"balancer grew by {after - before} KiB while the client pushed {sent >> 20} MiB into a stopped node")
        s.close()
    finally:
        node.signal(signal.SIGCONT)
    wait_clients_gone(bal, timeout=10)
    wait_fds(bal, baseline_fds, timeout=10)


# --------------------------------------------------------------------------
# nodes from the Redis registry
# --------------------------------------------------------------------------


def registry_members(bal) -> set[int]:
    """Members that take new connections: a node that joins a running balancer does after a good check."""
    return {n["port"] for n in admin_nodes(bal)["nodes"] if n["member"] and n["available"]}


def test_nodes_from_the_registry_join_and_leave_without_restart(cluster, balancers):
    nodes = cluster.start(2)
    bal = balancers.start([], "--registry", cluster.redis.url, "--algorithm", "round-robin")
    pid = bal.pid
    wait_until(lambda: registry_members(bal) == {n.port for n in nodes}, 5, "both nodes taken from the registry")

    async def spread(count: int) -> Counter:
        clients = await open_many(bal, count)
        placed = Counter(c.info["node"] for c in clients)
        await close_all(clients)
        return placed

    assert set(run(spread(4))) == {node_id(n) for n in nodes}

    # A node that announces itself takes connections within about 2 s (read from the registry, then
    # one good health check).
    t0 = time.monotonic()
    third = cluster.start_node()
    wait_until(lambda: third.port in registry_members(bal), 5, "the new node in the pick set")
    assert time.monotonic() - t0 < 4.0
    assert node_id(third) in run(spread(6))

    # A draining node (SIGTERM) leaves the pick set as soon as its registry entry says so.
    nodes[0].signal(signal.SIGTERM)
    wait_until(lambda: nodes[0].port not in registry_members(bal), 5, "the draining node out of the pick set")

    # A SIGKILLed node leaves when its entry expires (TTL 6 s) at the latest.
    nodes[1].signal(signal.SIGKILL)
    wait_until(lambda: nodes[1].port not in registry_members(bal), 6 + 2, "the killed node's entry expired")
    assert set(run(spread(3))) == {node_id(third)}

    # Redis down: the balancer keeps routing on the last known set.
    cluster.redis.kill()
    wait_until(lambda: "registry unreadable" in bal.log_tail(200), 5, "the balancer noticing Redis is gone")
    assert registry_members(bal) == {third.port}
    assert set(run(spread(2))) == {node_id(third)}
    assert bal.pid == pid and bal.alive()


def registry_weights(bal) -> dict[int, int]:
    return {n["port"]: n["weight"] for n in admin_nodes(bal)["nodes"] if n["member"] and n["available"]}


def test_registry_nodes_are_weighted_by_what_they_announce(cluster, balancers):
    """`serve --weight` reaches the balancer through the registry, lowered by the node's load: weight
    x the free share of its --max-connections (docs/balancer.md)."""
    big = cluster.start_node("--weight", "3")
    small = cluster.start_node()
    bal = balancers.start([], "--registry", cluster.redis.url, "--algorithm", "round-robin")
    wait_until(lambda: registry_weights(bal) == {big.port: 3, small.port: 1}, 8, "both nodes with their weights")

    async def spread(count: int) -> Counter:
        clients = await open_many(bal, count)
        placed = Counter(c.info["node"] for c in clients)
        await close_all(clients)
        return placed

    # Smooth weighted round robin: exactly 3 of every 4 on the weight-3 node.
    assert run(spread(8)) == Counter({node_id(big): 6, node_id(small): 2})

    # A node half full counts half: weight 10, 5 of 10 connections held (directly, not through the balancer).
    filling = cluster.start_node("--weight", "10", "--max-connections", "10")
    wait_until(lambda: registry_weights(bal).get(filling.port) == 10, 8, "the new node at its full weight")

    async def hold_then_release():
        held = [await connect(filling) for _ in range(5)]
        try:
            await asyncio.to_thread(wait_until, lambda: registry_weights(bal).get(filling.port) == 5, 8,
                                    "the weight halved by the load")
        finally:
            await close_all(held)

    run(hold_then_release())
    wait_until(lambda: registry_weights(bal).get(filling.port) == 10, 8, "the full weight back once the load is gone")


def redis_cli(redis, *args: str) -> str:
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(redis.port), *args],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_nodes_announce_cpu_and_loop_lag(cluster):
    """Every registry entry carries the node's CPU share (0-1) and event-loop lag (seconds) from its
    second announce on, and they move with the node's work."""
    node = cluster.start_node()
    key = f"sb:node:{node_id(node)}"

    def entry() -> dict:
        text = redis_cli(cluster.redis, "GET", key)
        return json.loads(text) if text else {}

    wait_until(lambda: "cpu" in entry() and "lag" in entry(), 8, "cpu and lag in the registry entry")
    idle = entry()
    assert 0 <= idle["cpu"] <= 1 and 0 <= idle["lag"] < 1, idle

    async def busy():
        # Keep the node's loops busy for a few announces: 100 clients publishing as fast as they can.
        clients = [await connect(node) for _ in range(100)]
        stop = time.monotonic() + 6
        seen = []

        async def publish(c):
            while time.monotonic() < stop:
                await c.call("publish", {"channel": "load:x", "data": {"n": 1}})
                await asyncio.sleep(0.02)  # 50 commands/s each, under the node's per-connection limit

        async def watch():
            while time.monotonic() < stop:
                seen.append(entry().get("cpu", 0))
                await asyncio.sleep(0.5)

        await asyncio.gather(watch(), *(publish(c) for c in clients))
        await close_all(clients)
        return seen

    seen = run(busy())
    assert max(seen) > idle["cpu"] and max(seen) > 0.05, f"idle {idle['cpu']}, busy {seen}"


def test_registry_weights_follow_cpu_and_loop_lag(node_factory, redis_server, balancers):
    """The balancer lowers a registry node's weight by its announced CPU share above half its cores
    and its event-loop lag above 25 ms (docs/balancer.md). The entries are written here, for three
    real nodes that announce nothing themselves, and refreshed as a node would."""
    nodes = start_nodes(node_factory, 3)
    figures = {0: {"cpu": 0.75, "lag": 0.001}, 1: {"cpu": 0.1, "lag": 0.1375}, 2: {"cpu": 0.1, "lag": 0.002}}
    done = threading.Event()

    def announce():
        while not done.is_set():
            now = time.time()
            for i, n in enumerate(nodes):
                body = {"id": f"fake{i}", "name": f"fake{i}", "address": f"127.0.0.1:{n.port}", "connections": 0,
                        "draining": False, "weight": 8, "maxConnections": 1000, "at": now, **figures[i]}
                redis_cli(redis_server, "ZADD", "sb:nodes", str(now + 6), f"fake{i}")
                redis_cli(redis_server, "SET", f"sb:node:fake{i}", json.dumps(body), "PX", "6000")
            done.wait(0.5)

    writer = threading.Thread(target=announce, daemon=True)
    writer.start()
    try:
        bal = balancers.start([], "--registry", redis_server.url, "--algorithm", "round-robin")
        ports = [n.port for n in nodes]
        # cpu 0.75 halves weight 8; lag 137.5 ms (half way from 25 to 250 ms) halves it; the third is unhurried.
        wait_until(lambda: registry_weights(bal) == {ports[0]: 4, ports[1]: 4, ports[2]: 8}, 8, "weights from the figures")

        async def spread(count: int) -> Counter:
            clients = await open_many(bal, count)
            placed = Counter(c.info["node"] for c in clients)
            await close_all(clients)
            return placed

        assert run(spread(16)) == Counter({node_id(nodes[0]): 4, node_id(nodes[1]): 4, node_id(nodes[2]): 8})
        # The figures move, the weights follow: the first node calms down, the third falls behind.
        figures[0] = {"cpu": 0.3, "lag": 0.001}
        figures[2] = {"cpu": 0.1, "lag": 0.5}
        wait_until(lambda: registry_weights(bal) == {ports[0]: 8, ports[1]: 4, ports[2]: 1}, 8, "weights after the change")
    finally:
        done.set()
        writer.join(5)


def test_admin_drain_and_ready(node_factory, balancers):
    nodes = start_nodes(node_factory, 2)
    bal = balancers.start(nodes, "--algorithm", "round-robin")
    target = f"127.0.0.1:{nodes[0].port}"

    def admin_post(path):
        import requests
        with requests.Session() as s:
            s.trust_env = False
            return s.post(bal.admin_url + path, timeout=5)

    async def body():
        kept = await open_many(bal, 2)
        on_target = [c for c in kept if c.info["node"] == node_id(nodes[0])]
        assert len(on_target) == 1
        r = admin_post(f"/admin/nodes/{target}/drain")
        assert r.status_code == 200 and r.json() == {"node": target, "drained": True}, r.text
        fresh = await open_many(bal, 4)
        assert {c.info["node"] for c in fresh} == {node_id(nodes[1])}
        # The tunnel already on the drained node still works.
        assert await on_target[0].call("ping", {}) is not None
        assert on_target[0].closed_at is None
        r = admin_post(f"/admin/nodes/{target}/ready")
        assert r.status_code == 200, r.text
        back = await open_many(bal, 4)
        assert node_id(nodes[0]) in {c.info["node"] for c in back}
        assert admin_post("/admin/nodes/127.0.0.1:1/drain").status_code == 404
        await close_all(kept + fresh + back)

    run(body())


def test_sigterm_drains_the_balancer(node_factory, balancers):
    nodes = start_nodes(node_factory, 1)
    bal = balancers.start(nodes, drain_seconds=10)

    async def body():
        c = await connect(bal)
        bal.signal(signal.SIGTERM)
        # The listeners (one per event loop, sharing the port) close: new connections are refused,
        # soon, whichever listener the kernel would have given them to.
        wait_until(lambda: not any(_connectable(bal.port) for _ in range(20)), 3, "the balancer's listeners closed")
        # The open tunnel still works during the drain.
        await c.call("ping", {})
        assert bal.alive()
        t0 = time.monotonic()
        await c.close()
        # Its last tunnel gone, the balancer exits well before the 10 s window.
        assert bal.wait_exit(5) == 0
        assert time.monotonic() - t0 < 3

    run(body())


def test_second_signal_exits_at_once(node_factory, balancers):
    nodes = start_nodes(node_factory, 1)
    bal = balancers.start(nodes, drain_seconds=30)

    async def body():
        c = await connect(bal)
        bal.signal(signal.SIGTERM)
        wait_until(lambda: "draining" in bal.log_tail(20), 3, "the drain starting")
        bal.signal(signal.SIGTERM)
        assert bal.wait_exit(3) is not None
        await c.wait_closed(timeout=3)

    run(body())


def _connectable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# TLS termination
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_tls_termination(node_factory, balancers, tmp_path, kind):
    import ssl

    from balancerlib import make_certificate
    from sbclient import Client, open_ws

    cert, key = make_certificate(tmp_path, kind)
    nodes = start_nodes(node_factory, 2)
    bal = balancers.start(nodes, "--tls-cert", cert, "--tls-key", key, "--header-timeout", "1", tls=True)

    def context(version=None):
        ctx = ssl.create_default_context(cafile=cert)
        ctx.set_alpn_protocols(["http/1.1"])
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = version
        return ctx

    # TLS 1.2 and 1.3 both work, ALPN says http/1.1, and plain HTTP flows inside.
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        with socket.create_connection(("127.0.0.1", bal.port), timeout=5) as raw:
            with context(version).wrap_socket(raw, server_hostname="127.0.0.1") as s:
                assert s.version() == name
                assert s.selected_alpn_protocol() == "http/1.1"
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n")
                data = b""
                while b'"ready"' not in data:
                    got = s.recv(4096)
                    if not got:
                        break
                    data += got
                assert data.startswith(b"HTTP/1.1 200 "), data[:200]

    async def websocket():
        ws = await open_ws(bal.ws_url, ssl=context())
        c = Client(ws)
        info = await c.result("connect", {})
        await c.subscribe("chat:tls")
        await c.publish("chat:tls", {"over": "tls"})
        assert (await c.wait_pubs("chat:tls", 1))[0]["data"] == {"over": "tls"}
        await c.close()
        return info

    assert run(websocket())["node"]

    # Plain HTTP on the TLS port gets no answer but a close, and the balancer carries on.
    resp, _ = raw_exchange(bal.port, b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5)
    assert not resp.startswith(b"HTTP/1.1 200")
    # A client that never starts its handshake is cut at the head deadline (the handshake is part of it),
    # after the 1 s linger.
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", bal.port), timeout=5) as idle:
        try:
            while idle.recv(4096):
                pass
        except ConnectionResetError:
            pass
    assert 0.9 <= time.monotonic() - t0 <= 4.5, f"silent TLS client cut after {time.monotonic() - t0:.2f}s"
    m = metrics(bal)
    assert m["switchboard_balancer_tls_handshakes_total"] >= 3
    wait_clients_gone(bal)


def test_a_registry_node_may_advertise_a_host_name(cluster, balancers):
    """`serve --advertise localhost` announces a host name instead of the bound address (as a node
    bound to all interfaces or behind NAT must); the balancer resolves it off its event loops and
    sends clients there. A name that does not resolve takes no connections, and the other node still
    does."""
    named = cluster.start_node("--advertise", "localhost")
    lost = cluster.start_node("--advertise", "no-such-node.invalid")
    plain = cluster.start_node()
    bal = balancers.start([], "--registry", cluster.redis.url, "--algorithm", "round-robin")

    def members():
        return {n["id"] for n in admin_nodes(bal)["nodes"] if n["member"] and n["available"]}

    wait_until(lambda: members() == {f"localhost:{named.port}", f"127.0.0.1:{plain.port}"}, 10,
               "the named node and the plain one taking connections, not the unresolvable one")
    info = cluster.nodes[0].api_result("info", {})
    assert f"localhost:{named.port}" in [n["address"] for n in info["nodes"]], info

    async def placed():
        clients = await open_many(bal, 6)
        where = Counter(c.info["node"] for c in clients)
        await close_all(clients)
        return where

    assert run(placed()) == Counter({node_id(named): 3, node_id(plain): 3})
    assert node_id(lost) not in run(placed())
