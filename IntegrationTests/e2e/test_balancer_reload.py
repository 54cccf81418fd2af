"""`switchboard balance`: config file + SIGHUP reload, and the client's address reaching the node
(X-Forwarded-For or PROXY protocol v2, believed only from `--trusted-proxy`). docs/balancer.md."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import ssl
import time

import pytest

from balancerlib import admin_nodes, make_certificate, node_id, wait_until
from sbclient import Client, connect_url, open_ws, run
from sbwire import OP_CLOSE, OP_TEXT, close_code, parse_frame, ws_frame




def write_config(path, **options) -> None:
    with open(path, "w") as f:
        json.dump(options, f)


def count_in_log(bal, text: str) -> int:
    return bal.log_tail(100000).count(text)


def sighup_and_wait(bal, expect: str) -> None:
    before = count_in_log(bal, expect)
    bal.signal(signal.SIGHUP)
    wait_until(lambda: count_in_log(bal, expect) > before, 5, f"{expect!r} in the balancer log")


def test_sighup_reloads_nodes_and_keeps_tunnels(node_factory, balancers, tmp_path):
    nodes = [node_factory.start(node_name=f"n{i}") for i in range(2)]
    config = tmp_path / "balance.json"
    write_config(config, nodes=[f"127.0.0.1:{nodes[0].port}"], algorithm="round-robin")
    bal = balancers.start([], "--config", str(config))
    pid = bal.pid

    async def body():
        old = [await connect_url(f"ws://127.0.0.1:{bal.port}/ws") for _ in range(3)]
        assert {c.info["node"] for c in old} == {node_id(nodes[0])}
        for c in old:
            await c.subscribe("chat:reload")

        # New node set: only the second node; the tunnels to the first stay open and working.
        write_config(config, nodes=[f"127.0.0.1:{nodes[1].port}"], algorithm="least-conn")
        sighup_and_wait(bal, "configuration reloaded")
        fresh = [await connect_url(f"ws://127.0.0.1:{bal.port}/ws") for _ in range(3)]
        assert {c.info["node"] for c in fresh} == {node_id(nodes[1])}
        assert admin_nodes(bal)["algorithm"] == "least-conn"
        await fresh[0].subscribe("chat:reload")
        await old[0].publish("chat:reload", {"n": 1})
        for c in old:
            assert (await c.wait_pubs("chat:reload", 1))[0]["data"] == {"n": 1}
            assert c.closed_at is None

        # A bad configuration is refused, logged, and the running one stays.
        write_config(config, nodes=["127.0.0.1:0"], algorithm="fastest")
        sighup_and_wait(bal, "reload refused")
        with open(config, "w") as f:
            f.write("{not json")
        sighup_and_wait(bal, "reload refused")
        again = [await connect_url(f"ws://127.0.0.1:{bal.port}/ws") for _ in range(2)]
        assert {c.info["node"] for c in again} == {node_id(nodes[1])}
        assert admin_nodes(bal)["algorithm"] == "least-conn"
        for c in old:
            assert await c.call("ping", {}) is not None
        for c in old + fresh + again:
            await c.close()

    run(body())
    assert bal.pid == pid and bal.alive()


def test_flags_beat_environment_which_beats_the_file(node_factory, balancers, tmp_path):
    nodes = [node_factory.start(node_name=f"n{i}") for i in range(2)]
    config = tmp_path / "balance.json"
    write_config(config, nodes=[f"127.0.0.1:{nodes[0].port}"], algorithm="round-robin", maxConnections=5)
    env = {"SWITCHBOARD_BALANCE_ALGORITHM": "least-conn", "SWITCHBOARD_BALANCE_NODES": f"127.0.0.1:{nodes[1].port}"}
    bal = balancers.start([], "--config", str(config), "--algorithm", "hash", env=env)
    status = admin_nodes(bal)
    assert status["algorithm"] == "hash"  # flag over environment
    assert [n["port"] for n in status["nodes"]] == [nodes[1].port]  # environment over file


def test_sighup_reloads_the_certificate_and_keeps_tls_tunnels(node_factory, balancers, tmp_path):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    cert1, key1 = make_certificate(first_dir, "rsa")
    cert2, key2 = make_certificate(second_dir, "ecdsa")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    for src, dst in ((cert1, cert), (key1, key)):
        with open(src, "rb") as s, open(dst, "wb") as d:
            d.write(s.read())
    nodes = [node_factory.start(node_name="n0")]
    bal = balancers.start(nodes, "--tls-cert", cert, "--tls-key", key, tls=True)

    def context(cafile):
        ctx = ssl.create_default_context(cafile=cafile)
        return ctx

    def peer_certificate() -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", bal.port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as s:
                return s.getpeercert(binary_form=True)

    def der(path) -> bytes:
        with open(path) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    async def body():
        ws = await open_ws(bal.ws_url, ssl=context(cert1))
        old = Client(ws)
        await old.result("connect", {})
        assert peer_certificate() == der(cert1)
        for src, dst in ((cert2, cert), (key2, key)):
            with open(src, "rb") as s, open(dst + ".tmp", "wb") as d:
                d.write(s.read())
            os.replace(dst + ".tmp", dst)
        sighup_and_wait(bal, "configuration reloaded")
        assert peer_certificate() == der(cert2)
        new = Client(await open_ws(bal.ws_url, ssl=context(cert2)))
        await new.result("connect", {})
        # The tunnel opened under the old certificate still works.
        assert await old.call("ping", {}) is not None
        # A key that does not match: refused, and the running certificate stays.
        with open(cert1, "rb") as s, open(cert, "wb") as d:
            d.write(s.read())
        with open(key, "w") as f:
            f.write("not a key\n")
        sighup_and_wait(bal, "reload refused")
        assert peer_certificate() == der(cert2)
        await old.close()
        await new.close()

    run(body())


# --------------------------------------------------------------------------
# the client's address at the node
# --------------------------------------------------------------------------


def raw_websocket(port: int, source: str, extra_headers: str = "") -> str:
    """A WebSocket handshake + `connect` from `source`: 'ok' on a reply, 'close <code>' when closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        assert chunk, f"EOF during the handshake: {buf!r}"
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(ws_frame(OP_TEXT, json.dumps({"id": 1, "connect": {}}).encode()))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = parse_frame(buf)
        if got is not None:
            (_, opcode, payload), used = got
            buf = buf[used:]
            if opcode == OP_CLOSE:
                sock.close()
                return f"close {close_code(payload)}"
            if opcode == OP_TEXT:
                OPEN_SOCKETS.append(sock)
                return "ok"
            continue
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    sock.close()
    return "eof"


OPEN_SOCKETS: list[socket.socket] = []


@pytest.fixture
def open_sockets():
    yield OPEN_SOCKETS
    for s in OPEN_SOCKETS:
        s.close()
    OPEN_SOCKETS.clear()


@pytest.mark.parametrize("mode", ["x-forwarded-for", "proxy-protocol"])
def test_the_node_caps_the_real_client_behind_a_trusted_balancer(node_factory, balancers, mode, open_sockets):
    node = node_factory.start("--trusted-proxy", "127.0.0.1/32", "--max-connections-per-ip", "2", node_name="n0")
    bal = balancers.start([node], "--forward-client-address", mode)
    # Two clients from 127.0.0.2 fit; the third is over its own cap (close 3504) although the node
    # sees every connection come from the balancer's 127.0.0.1. A spoofed X-Forwarded-For does not help:
    # the balancer strips it.
    spoof = "X-Forwarded-For: 203.0.113.50\r\n"
    assert raw_websocket(bal.port, "127.0.0.2") == "ok"
    assert raw_websocket(bal.port, "127.0.0.2", spoof) == "ok"
    assert raw_websocket(bal.port, "127.0.0.2", spoof) == "close 3504"
    # Another client address has its own count.
    assert raw_websocket(bal.port, "127.0.0.3") == "ok"
    assert raw_websocket(bal.port, "127.0.0.3") == "ok"
    assert raw_websocket(bal.port, "127.0.0.3") == "close 3504"


def test_the_node_ignores_forwarded_for_from_untrusted_addresses(node_factory, open_sockets):
    node = node_factory.start("--trusted-proxy", "127.0.0.1", "--max-connections-per-ip", "2", node_name="n0")
    # 127.0.0.4 is no trusted proxy: its X-Forwarded-For is ignored, so it is capped as itself.
    results = [raw_websocket(node.port, "127.0.0.4", f"X-Forwarded-For: 198.51.100.{i}\r\n") for i in range(3)]
    assert results == ["ok", "ok", "close 3504"]
    # The trusted proxy's own connections that name no client are not capped.
    assert [raw_websocket(node.port, "127.0.0.1") for _ in range(4)] == ["ok"] * 4


# --------------------------------------------------------------------------
# metrics: promtool, the accept-to-101 histogram, the dashboard's balancer row
# --------------------------------------------------------------------------


def test_balancer_metrics_pass_promtool_and_feed_the_dashboard(node_factory, balancers):
    import pathlib
    import re
    import shutil
    import subprocess

    from balancerlib import admin_get, metrics

    node = node_factory.start(node_name="n0")
    bal = balancers.start([node])

    async def body():
        clients = [await connect_url(f"ws://127.0.0.1:{bal.port}/ws") for _ in range(3)]
        for c in clients:
            await c.close()

    run(body())
    bal.signal(signal.SIGHUP)
    wait_until(lambda: metrics(bal).get('switchboard_balancer_reloads_total{result="applied"}', 0) == 1, 5,
               "the reload counted")
    m = metrics(bal)
    assert m["switchboard_balancer_accept_to_first_byte_seconds_count"] == 3
    assert m['switchboard_balancer_accept_to_first_byte_seconds_bucket{le="+Inf"}'] == 3
    assert 0 < m["switchboard_balancer_accept_to_first_byte_seconds_sum"] < 3
    text = admin_get(bal, "/metrics").text
    promtool = shutil.which("promtool")
    if promtool:  # scripts/test.sh installs it (Debian's prometheus package)
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    exported = {re.sub(r"\{.*", "", line.split(" ")[0]) for line in text.splitlines() if line and not line.startswith("#")}
    families = exported | {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
    dashboard = json.loads((pathlib.Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "switchboard.json").read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= set(re.findall(r"switchboard_balancer_[a-z_]+", target["expr"]))
    assert len(used) >= 4, used
    assert used <= families, sorted(used - families)


def test_websocket_health_check_needs_a_working_websocket(node_factory, balancers):
    """A server that answers every GET with 200 (so /readyz passes) but has no WebSocket is taken out
    by --check-websocket; a real node stays up, and leaves once it drains (it refuses upgrades)."""
    import http.server
    import threading

    class AlwaysOK(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AlwaysOK)
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        node = node_factory.start(node_name="n0", drain_seconds=20)
        fake_port = fake.server_address[1]
        bal = balancers.start([node], "--node", f"127.0.0.1:{fake_port}", "--check-websocket")

        def row(port: int) -> dict:
            return next(n for n in admin_nodes(bal)["nodes"] if n["port"] == port)

        wait_until(lambda: not row(fake_port)["up"], 5, "the WebSocket-less server out")
        assert row(node.port)["up"] and row(node.port)["checksFailed"] == 0

        async def body():
            clients = [await connect_url(f"ws://127.0.0.1:{bal.port}/ws") for _ in range(3)]
            assert {c.info["node"] for c in clients} == {node_id(node)}
            for c in clients:
                await c.close()

        run(body())
        node.signal(signal.SIGTERM)
        wait_until(lambda: not row(node.port)["up"], 5, "the draining node out after failed WebSocket checks")
    finally:
        fake.shutdown()
        fake.server_close()
