"""The shipped HAProxy and nginx configurations (deploy/haproxy, deploy/nginx), with the real programs:
they pass `haproxy -c` and `nginx -t` as shipped, and a copy with run-time ports carries WebSocket,
SSE and long-poll to real nodes, keeps a channel on one node when hashing, and survives a node SIGKILL."""

from __future__ import annotations

import os
import signal
import ssl
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest

from balancerlib import HAPROXY_CFG, NGINX_CONF, ProxyProcess, node_id, proxy_binary, wait_until
from sbclient import REPO_ROOT, Client, SSEStream, close_all_sse, connect_url, free_port, lp_poll, open_ws, run

HAPROXY_TLS_CFG = os.path.join(REPO_ROOT, "deploy", "haproxy", "haproxy-tls.cfg")
NGINX_TLS_CONF = os.path.join(REPO_ROOT, "deploy", "nginx", "nginx-tls.conf")
EXAMPLE_CERT = os.path.join(REPO_ROOT, "deploy", "tls", "example-cert.pem")


def test_shipped_configs_pass_the_real_checkers():
    haproxy, nginx = proxy_binary("haproxy"), proxy_binary("nginx")
    assert haproxy and nginx, "haproxy and nginx must be installed (scripts/test.sh installs them)"
    r = subprocess.run([haproxy, "-c", "-f", HAPROXY_CFG], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([nginx, "-t", "-c", NGINX_CONF], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    # The TLS variants, as shipped (HAProxy's certificate path is relative to the repository root).
    r = subprocess.run([haproxy, "-c", "-f", HAPROXY_TLS_CFG], capture_output=True, timeout=30, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([nginx, "-t", "-c", NGINX_TLS_CONF], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def proxies(tmp_path):
    started: list[ProxyProcess] = []

    def start(kind: str, nodes, tls: bool = False) -> ProxyProcess:
        ports = {8101: nodes[0].port, 8102: nodes[1].port,
                 8201: getattr(nodes[0], "agent_port", 0) or free_port(),
                 8202: getattr(nodes[1], "agent_port", 0) or free_port()}
        main = 8443 if tls else 8000
        if kind == "haproxy":
            ports.update({main: free_port(), 8404: free_port(), 8405: free_port()})
            src = HAPROXY_TLS_CFG if tls else HAPROXY_CFG
        else:
            ports.update({main: free_port(), 8444 if tls else 8001: free_port()})
            src = NGINX_TLS_CONF if tls else NGINX_CONF
        p = ProxyProcess(kind, tmp_path, ports, main, src=src)
        p.hash_port = ports[main] if kind == "haproxy" else ports[8444 if tls else 8001]
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.stop()
        close_all_sse()


async def node_of(url: str) -> str:
    c = await connect_url(url)
    node = c.info["node"]
    await c.close()
    return node


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
def test_transports_hashing_and_failover_through_the_proxy(cluster, proxies, kind):
    nodes = cluster.start(2)
    proxy = proxies(kind, nodes)
    proxy.api_key = cluster.api_key

    async def websocket_part():
        sub = await connect_url(proxy.ws_url)
        pub = await connect_url(proxy.ws_url)
        await sub.subscribe("chat:proxy")
        for i in range(5):
            await pub.publish("chat:proxy", {"i": i})
        assert [p["data"]["i"] for p in await sub.wait_pubs("chat:proxy", 5)] == list(range(5))
        # Connections spread over both nodes.
        placed = Counter([sub.info["node"], pub.info["node"]])
        more = [await connect_url(proxy.ws_url) for _ in range(6)]
        placed.update(c.info["node"] for c in more)
        assert len(placed) == 2, placed
        for c in [sub, pub] + more:
            await c.close()

    run(websocket_part())

    # SSE: stream and POSTed commands through the proxy.
    stream = SSEStream(proxy, connect={})
    assert stream.status == 200, stream.status_line
    stream.wait_connected()
    r = stream.post({"id": 2, "subscribe": {"channel": "chat:psse"}})
    assert r.status_code == 202, r.text
    stream.wait_reply(2)
    proxy.api_result("publish", {"channel": "chat:psse", "data": "hi"})
    assert [p["data"] for p in stream.wait_pubs("chat:psse", 1)] == ["hi"]
    close_all_sse()

    # Long-poll: a waiting poll through the proxy gets the next publication.
    r = lp_poll(proxy, {"subs": {"chat:plp": {}}, "timeout": 2})
    assert r.status_code == 200, r.text
    position = next(it["position"] for it in r.json() if "position" in it)
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(r=lp_poll(proxy, {"subs": {"chat:plp": position}, "timeout": 5})))
    t.start()
    time.sleep(0.3)  # not a synchronisation: the poll returns the publication whether or not it was waiting
    proxy.api_result("publish", {"channel": "chat:plp", "data": "x"})
    t.join(15)
    assert [it["pub"]["data"] for it in result["r"].json() if "pub" in it] == ["x"]

    # Hashing on the channel parameter keeps each channel on one node.
    async def hashing():
        placement = {}
        for i in range(12):
            ch = f"chat:h{i}"
            seen = {await node_of(f"ws://127.0.0.1:{proxy.hash_port}/ws?channel={ch}") for _ in range(3)}
            assert len(seen) == 1, (ch, seen)
            placement[ch] = seen.pop()
        assert len(set(placement.values())) == 2, placement

    run(hashing())

    # A node SIGKILLed: new clients all get through to the survivor (retry on another node).
    nodes[0].signal(signal.SIGKILL)
    nodes[0].wait_exit(5)

    async def failover():
        return [await node_of(proxy.ws_url) for _ in range(6)]

    assert set(run(failover())) == {node_id(nodes[1])}


def haproxy_command(port: int, command: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command.encode() + b"\n")
        out = b""
        while True:
            got = s.recv(65536)
            if not got:
                return out.decode("utf-8", "replace")
            out += got


def test_haproxy_takes_a_node_through_the_runtime_api(cluster, proxies):
    nodes = cluster.start(2)
    proxy = proxies("haproxy", nodes)
    with open(proxy.cfg_path) as f:
        api_port = int(next(line for line in f if "stats socket" in line).split("127.0.0.1:")[1].split()[0])
    third = cluster.start_node()
    for command in (f"add server nodes/node3 127.0.0.1:{third.port} check",
                    "enable health nodes/node3", "enable server nodes/node3"):
        out = haproxy_command(api_port, command)
        assert "rror" not in out and "nknown" not in out, (command, out)

    async def spread():
        clients = [await connect_url(proxy.ws_url) for _ in range(12)]
        placed = Counter(c.info["node"] for c in clients)
        for c in clients:
            await c.close()
        return placed

    def third_used():
        return run(spread()).get(node_id(third), 0) > 0

    wait_until(third_used, 15, "the node added through the runtime API taking connections", interval=0.5)
    # Drain through the runtime API: no new connections to node1.
    assert "rror" not in haproxy_command(api_port, "set server nodes/node1 state drain")
    assert node_id(nodes[0]) not in run(spread())


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
def test_tls_variant_carries_websockets(cluster, proxies, kind):
    nodes = cluster.start(2)
    proxy = proxies(kind, nodes, tls=True)
    ctx = ssl.create_default_context(cafile=EXAMPLE_CERT)
    ctx.set_alpn_protocols(["http/1.1"])

    async def body():
        seen = set()
        for _ in range(4):
            c = Client(await open_ws(f"wss://127.0.0.1:{proxy.port}/ws", ssl=ctx))
            info = await c.result("connect", {})
            await c.subscribe("chat:tls")
            await c.publish("chat:tls", {"via": kind})
            assert (await c.wait_pubs("chat:tls", 1))[0]["data"] == {"via": kind}
            seen.add(info["node"])
            await c.close()
        return seen

    assert run(body()) <= {node_id(n) for n in nodes}
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            assert s.selected_alpn_protocol() == "http/1.1"


def agent_reply(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        out = b""
        while True:
            got = s.recv(256)
            if not got:
                return out.decode()
            out += got


def test_haproxy_agent_check_reads_the_nodes_headroom(cluster, proxies):
    agent_ports = [free_port(), free_port()]
    nodes = []
    for p in agent_ports:
        n = cluster.start_node("--haproxy-agent-port", str(p), "--max-connections", "100", "--trusted-proxy", "127.0.0.1")
        n.agent_port = p
        nodes.append(n)
    assert agent_reply(agent_ports[0]) == "up 100%\n"
    proxy = proxies("haproxy", nodes)
    with open(proxy.cfg_path) as f:
        api_port = int(next(line for line in f if "stats socket" in line).split("127.0.0.1:")[1].split()[0])

    def agent_status(server: str) -> str:
        rows = [line.split(",") for line in haproxy_command(api_port, "show stat").splitlines()]
        header = rows[0]
        for row in rows[1:]:
            if len(row) == len(header) and row[0] == "nodes" and row[1] == server:
                return row[header.index("agent_status")]
        return ""

    wait_until(lambda: agent_status("node1") == "L7OK" and agent_status("node2") == "L7OK", 10,
               "HAProxy reading both agents")

    async def hold():
        clients = [await connect_url(f"ws://127.0.0.1:{nodes[0].port}/ws") for _ in range(30)]
        # 30 of 100 held (HAProxy's health checks may hold one or two more for a moment).
        reply = agent_reply(agent_ports[0])
        assert reply.startswith("up ") and reply.endswith("%\n"), reply
        assert 66 <= int(reply[3:-2]) <= 70, reply
        for c in clients:
            await c.close()

    run(hold())
    nodes[0].signal(signal.SIGTERM)
    wait_until(lambda: agent_reply(agent_ports[0]) == "drain\n", 5, "the draining node's agent saying drain")
