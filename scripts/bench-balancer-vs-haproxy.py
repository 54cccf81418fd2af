#!/usr/bin/env python3
"""Memory per idle proxied WebSocket and CPU per proxied handshake: `switchboard balance` against
HAProxy 2.6 (nbthread 2), in front of the same two `switchboard serve` nodes, in one run.

    python3 scripts/bench-balancer-vs-haproxy.py [--connections 4000] [--binary .build/release/switchboard]

For each proxy: read its CPU time (utime + stime) and anonymous RSS, open N WebSocket connections
through it (handshake to the 101, then idle), read both again. CPU per handshake = CPU delta / N,
memory per idle connection = RssAnon delta / N. Prints one JSON line per proxy and the ratios.
Everything runs on loopback ports picked at run time and is stopped at the end."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_anon_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon")


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def open_websockets(port: int, count: int, timeout: float = 120) -> list[socket.socket]:
    """`count` WebSockets through 127.0.0.1:port, 200 handshakes in flight at most; all must get 101."""
    sel = selectors.DefaultSelector()
    done: list[socket.socket] = []
    pending: dict[socket.socket, bytes] = {}
    started = 0
    deadline = time.monotonic() + timeout
    request = ("GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    while len(done) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(done)} of {count} handshakes within {timeout}s")
        while started < count and len(pending) < 200:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(request.format(base64.b64encode(os.urandom(16)).decode()).encode())
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            pending[s] = b""
            started += 1
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            data = s.recv(4096)
            if not data:
                raise RuntimeError(f"EOF during a handshake: {pending[s]!r}")
            pending[s] += data
            if b"\r\n\r\n" in pending[s]:
                if not pending[s].startswith(b"HTTP/1.1 101"):
                    raise RuntimeError(f"handshake refused: {pending[s][:100]!r}")
                sel.unregister(s)
                del pending[s]
                done.append(s)
    return done


def measure(name: str, pid: int, port: int, count: int) -> dict:
    # Warm-up: a few connections so one-time allocations (loops, pools) are not counted.
    warm = open_websockets(port, 50)
    for s in warm:
        s.close()
    time.sleep(1)
    cpu0, rss0 = cpu_seconds(pid), rss_anon_kb(pid)
    t0 = time.monotonic()
    socks = open_websockets(port, count)
    elapsed = time.monotonic() - t0
    cpu1 = cpu_seconds(pid)
    time.sleep(2)  # let the proxy settle before reading memory
    rss1 = rss_anon_kb(pid)
    for s in socks:
        s.close()
    return {
        "proxy": name, "connections": count, "seconds": round(elapsed, 2),
        "cpu_us_per_handshake": round((cpu1 - cpu0) * 1e6 / count, 1),
        "kb_per_idle_connection": round((rss1 - rss0) / count, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--binary", default=".build/release/switchboard")
    args = parser.parse_args()
    procs: list[subprocess.Popen] = []
    work = tempfile.mkdtemp(prefix="bench-balancer-")
    try:
        node_ports = []
        for i in range(2):
            p = free_port()
            procs.append(subprocess.Popen(
                [args.binary, "serve", "--port", str(p), "--api-key", "bench", "--trusted-proxy", "127.0.0.1",
                 "--ping-interval", "0", "--log-level", "warning",
                 "--commands-per-second", "1000000", "--command-burst", "1000000"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"node{i}.log"), "w")))
            node_ports.append(p)
        for p in node_ports:
            wait_port(p)
        ours = free_port()
        balancer = subprocess.Popen(
            [args.binary, "balance", "--listen", f"127.0.0.1:{ours}", "--threads", "2", "--algorithm", "least-conn",
             "--log-level", "warning"] + sum((["--node", f"127.0.0.1:{p}"] for p in node_ports), []),
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "balancer.log"), "w"))
        procs.append(balancer)
        theirs = free_port()
        cfg = os.path.join(work, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    maxconn 9900
    nbthread 2
defaults
    mode http
    timeout connect 2s
    timeout http-request 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    option forwardfor
frontend fe
    bind 127.0.0.1:{theirs}
    default_backend nodes
backend nodes
    balance leastconn
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 2
    server n1 127.0.0.1:{node_ports[0]} check
    server n2 127.0.0.1:{node_ports[1]} check
""")
        haproxy = subprocess.Popen(["haproxy", "-f", cfg, "-db"], stdout=subprocess.DEVNULL,
                                   stderr=open(os.path.join(work, "haproxy.log"), "w"))
        procs.append(haproxy)
        wait_port(ours)
        wait_port(theirs)
        time.sleep(2)  # both proxies see the nodes up (checks every 1 s)
        results = [measure("switchboard balance", balancer.pid, ours, args.connections),
                   measure("haproxy 2.6 nbthread 2", haproxy.pid, theirs, args.connections)]
        for r in results:
            print(json.dumps(r))
        a, b = results
        print(json.dumps({
            "memory_ratio": round(a["kb_per_idle_connection"] / b["kb_per_idle_connection"], 2),
            "cpu_per_handshake_ratio": round(a["cpu_us_per_handshake"] / b["cpu_us_per_handshake"], 2),
        }))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
