#!/usr/bin/env python3
"""`switchboard balance` against HAProxy 2.6 (nbthread 2) in front of the same two `switchboard serve`
nodes, one run, every figure of issue 14's targets that a proxy alone decides:

    python3 scripts/bench-balancer-vs-haproxy.py --binary .build/release/switchboard \
        [--connections 4000] [--frame-connections 200 --frames 250 --frame-rate 10000] \
        [--latency-connections 300 --latency-rate 1000 --latency-seconds 10] [--tls-handshakes 2000] [--no-pin]

Figures, each measured on the proxy process alone (`clock_getcpuclockid`: user + system time of all its
threads, nanosecond resolution; `RssAnon` from /proc/PID/status):

1. memory per idle proxied connection: RssAnon growth / N after N plain WebSocket handshakes to the
   `101` that then stay idle (after a 50-connection warm-up);
2. CPU per proxied handshake: CPU delta of the same N handshakes / N (200 in flight);
3. CPU per forwarded small frame: K connections to the nodes' `/echo` endpoint through the proxy, each
   sending M masked 16-byte text frames, one in flight per connection, R echoes/s in all (0 = as fast as
   the replies come); CPU delta / (2 * K * M), i.e. per frame per direction: every echo is one frame
   forwarded client -> node and one node -> client;
4. added p99 latency: one paced loop sends echoes over C connections per path, directly to the nodes and
   through each proxy interleaved (same seconds, same machine state), R echoes/s per path for S seconds,
   latency = send to complete reply; added p99 = p99 through the proxy - p99 direct;
5. CPU per TLS 1.3 handshake + upgrade: a second instance of each proxy terminates TLS with the same
   self-signed certificate (`openssl req`, RSA 2048 by default), nodes plain behind; T full handshakes
   (no session resumption, ALPN http/1.1) each followed by a WebSocket upgrade to the `101`, CPU delta / T
   (and RssAnon growth / T as information).

Proxies are measured one after the other for figures 1-3 and 5 (ours first), at the same time for 4.
With --pin (the default on 2+ CPUs) nodes and proxies run on CPU 0 and this load generator on CPU 1, so
the generator never takes the proxies' CPU. Prints one JSON line per proxy, one for the direct path, one
with the ratios, then a table of every figure with its target and whether it is met. Loopback ports
picked at run time; every loop is bounded in count and time; every process is stopped at the end."""

from __future__ import annotations

import argparse
import base64
import collections
import ctypes
import json
import math
import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")
_LIBC = ctypes.CDLL(None, use_errno=True)

HANDSHAKE = ("GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")

# One pre-built masked client text frame (16-byte payload) and the exact unmasked echo the node returns.
PAYLOAD = b"switchboard-echo"
_MASK = bytes([0x5A, 0xC3, 0x17, 0x88])
FRAME = bytes([0x81, 0x80 | len(PAYLOAD)]) + _MASK + bytes(b ^ _MASK[i % 4] for i, b in enumerate(PAYLOAD))
REPLY = bytes([0x81, len(PAYLOAD)]) + PAYLOAD


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of `pid`, dead ones included, at ns resolution (clock ticks of
    /proc/PID/stat as a fallback: 10 ms granularity is too coarse for small counts)."""
    clock = ctypes.c_int()
    if _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) == 0:
        try:
            return time.clock_gettime(clock.value)
        except OSError:
            pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_anon_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def wait_fds(pid: int, at_most: int, timeout: float = 15) -> None:
    """After closing a batch: wait (bounded) until the proxy has let its sockets go, so that the next
    figure does not pay for this one's closes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if open_fds(pid) <= at_most:
            return
        time.sleep(0.1)
    print(f"warning: pid {pid} still has {open_fds(pid)} fds (> {at_most}) {timeout}s after a close",
          file=sys.stderr)


def close_all(socks: list) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def open_websockets(port: int, count: int, path: str = "/ws", timeout: float = 120) -> list[socket.socket]:
    """`count` WebSockets through 127.0.0.1:port, 200 handshakes in flight at most; all must get 101."""
    sel = selectors.DefaultSelector()
    done: list[socket.socket] = []
    pending: dict[socket.socket, bytes] = {}
    started = 0
    deadline = time.monotonic() + timeout
    try:
        while len(done) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(done)} of {count} handshakes within {timeout}s")
            while started < count and len(pending) < 200:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(HANDSHAKE.format(path=path, key=base64.b64encode(os.urandom(16)).decode()).encode())
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
    except BaseException:
        close_all(done + list(pending))
        raise
    finally:
        sel.close()
    return done


def open_tls_websockets(port: int, count: int, context: ssl.SSLContext, timeout: float = 180,
                        in_flight: int = 100) -> list[ssl.SSLSocket]:
    """`count` full TLS handshakes to 127.0.0.1:port, each followed by a WebSocket upgrade to the `101`."""
    sel = selectors.DefaultSelector()
    done: list[ssl.SSLSocket] = []
    state: dict[ssl.SSLSocket, list] = {}  # socket -> [phase, bytes read]
    started = 0
    deadline = time.monotonic() + timeout

    def step(s: ssl.SSLSocket) -> None:
        st = state[s]
        try:
            if st[0] == "handshake":
                s.do_handshake()
                request = HANDSHAKE.format(path="/ws", key=base64.b64encode(os.urandom(16)).decode()).encode()
                if s.send(request) != len(request):
                    raise RuntimeError("short TLS write of a request head")
                st[0] = "head"
            while True:  # phase "head": read until the response head is complete or nothing is left
                data = s.recv(4096)
                if not data:
                    raise RuntimeError(f"EOF during a TLS upgrade: {st[1]!r}")
                st[1] += data
                if b"\r\n\r\n" in st[1]:
                    if not st[1].startswith(b"HTTP/1.1 101"):
                        raise RuntimeError(f"TLS upgrade refused: {st[1][:100]!r}")
                    sel.unregister(s)
                    del state[s]
                    done.append(s)
                    return
        except ssl.SSLWantReadError:
            sel.modify(s, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            sel.modify(s, selectors.EVENT_WRITE)

    try:
        while len(done) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(done)} of {count} TLS upgrades within {timeout}s")
            while started < count and len(state) < in_flight:
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                raw.setblocking(False)
                s = context.wrap_socket(raw, do_handshake_on_connect=False)
                state[s] = ["handshake", b""]
                sel.register(s, selectors.EVENT_READ)
                started += 1
                step(s)
            for key, _ in sel.select(timeout=1):
                step(key.fileobj)
    except BaseException:
        close_all(done + list(state))
        raise
    finally:
        sel.close()
    return done


class EchoConnection:
    __slots__ = ("sock", "group", "buffer", "sent_at", "remaining")

    def __init__(self, sock: socket.socket, group: str, remaining: int) -> None:
        self.sock, self.group, self.buffer, self.sent_at, self.remaining = sock, group, b"", 0.0, remaining


def run_echoes(groups: dict[str, list[socket.socket]], rate: float, per_connection: int | None,
               seconds: float | None, timeout: float) -> dict[str, dict]:
    """Echo loop: one frame in flight per connection; each group sends at most `rate` frames/s (0: as fast
    as replies come), round-robin over its idle connections, until every connection sent `per_connection`
    frames or `seconds` passed; then waits for the replies. Bounded by `timeout`. Returns per group the
    frames sent and received and every round-trip latency in seconds."""
    sel = selectors.DefaultSelector()
    limit = per_connection if per_connection is not None else 1 << 62
    idle: dict[str, collections.deque] = {}
    stats = {g: {"sent": 0, "received": 0, "latencies": []} for g in groups}
    in_flight = 0
    try:
        for g, socks in groups.items():
            idle[g] = collections.deque()
            for s in socks:
                c = EchoConnection(s, g, limit)
                sel.register(s, selectors.EVENT_READ, c)
                idle[g].append(c)
        names = list(groups)
        t0 = time.perf_counter()
        hard = t0 + timeout
        turn = 0
        while True:
            now = time.perf_counter()
            if now > hard:
                raise RuntimeError(f"echo loop not done within {timeout}s: "
                                   + json.dumps({g: {k: v for k, v in st.items() if k != 'latencies'}
                                                 for g, st in stats.items()}))
            elapsed = now - t0
            sending = seconds is None or elapsed < seconds
            if sending:
                turn += 1
                for i in range(len(names)):  # rotate which path sends first
                    g = names[(turn + i) % len(names)]
                    st, q = stats[g], idle[g]
                    allowed = int(elapsed * rate) + 1 if rate > 0 else 1 << 62
                    while st["sent"] < allowed and q:
                        c = q.popleft()
                        if c.remaining <= 0:
                            continue
                        c.sent_at = time.perf_counter()
                        if c.sock.send(FRAME) != len(FRAME):
                            raise RuntimeError("short write of one small frame")
                        c.remaining -= 1
                        st["sent"] += 1
                        in_flight += 1
            exhausted = all(not q for q in idle.values())
            if in_flight == 0 and (not sending or exhausted):
                break
            wait = 0.05  # replies wake the loop; a paced send wakes it when it is due
            due = [stats[g]["sent"] / rate for g in names if idle[g]] if sending and rate > 0 else []
            if due:
                wait = min(wait, max(0.0, min(due) - elapsed))
            for key, _ in sel.select(timeout=wait):
                c = key.data
                data = c.sock.recv(65536)
                received_at = time.perf_counter()
                if not data:
                    raise RuntimeError(f"EOF on an echo connection ({c.group})")
                c.buffer += data
                while len(c.buffer) >= len(REPLY):
                    if c.buffer[:len(REPLY)] != REPLY:
                        raise RuntimeError(f"unexpected frame ({c.group}): {c.buffer[:40]!r}")
                    c.buffer = c.buffer[len(REPLY):]
                    st = stats[c.group]
                    st["received"] += 1
                    st["latencies"].append(received_at - c.sent_at)
                    in_flight -= 1
                    if c.remaining > 0:
                        idle[c.group].append(c)
    finally:
        sel.close()
    return stats


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def measure_handshakes(pid: int, port: int, count: int) -> dict:
    """Figures 1 and 2."""
    fds = open_fds(pid)
    warm = open_websockets(port, 50)  # one-time allocations (loops, pools) are not counted
    close_all(warm)
    wait_fds(pid, fds + 4)
    time.sleep(1)
    cpu0, rss0 = cpu_seconds(pid), rss_anon_kb(pid)
    t0 = time.monotonic()
    socks = open_websockets(port, count)
    elapsed = time.monotonic() - t0
    cpu1 = cpu_seconds(pid)
    time.sleep(2)  # let the proxy settle before reading memory
    rss1 = rss_anon_kb(pid)
    close_all(socks)
    wait_fds(pid, fds + 4)
    return {
        "connections": count, "seconds": round(elapsed, 2),
        "cpu_us_per_handshake": round((cpu1 - cpu0) * 1e6 / count, 1),
        "kb_per_idle_connection": round((rss1 - rss0) / count, 2),
    }


def measure_frames(pid: int, port: int, connections: int, frames: int, rate: float) -> dict:
    """Figure 3."""
    fds = open_fds(pid)
    socks = open_websockets(port, connections, path="/echo")
    try:
        run_echoes({"warm": socks}, 0, 2, None, 60)  # tunnels and buffers exist before counting
        cpu0 = cpu_seconds(pid)
        t0 = time.monotonic()
        stats = run_echoes({"load": socks}, rate, frames, None, 30 + 2 * connections * frames / max(rate, 2000))
        elapsed = time.monotonic() - t0
        cpu1 = cpu_seconds(pid)
    finally:
        close_all(socks)
    wait_fds(pid, fds + 4)
    echoes = stats["load"]["received"]
    return {
        "frame_connections": connections, "echoes": echoes, "frames_forwarded": 2 * echoes,
        "echoes_per_second": round(echoes / elapsed), "frame_seconds": round(elapsed, 2),
        "cpu_us_per_frame": round((cpu1 - cpu0) * 1e6 / (2 * echoes), 2),
    }


def measure_tls(pid: int, port: int, count: int, context: ssl.SSLContext) -> dict:
    """Figure 5."""
    fds = open_fds(pid)
    warm = open_tls_websockets(port, 50, context)
    close_all(warm)
    wait_fds(pid, fds + 4)
    time.sleep(1)
    cpu0, rss0 = cpu_seconds(pid), rss_anon_kb(pid)
    t0 = time.monotonic()
    socks = open_tls_websockets(port, count, context)
    elapsed = time.monotonic() - t0
    cpu1 = cpu_seconds(pid)
    time.sleep(2)
    rss1 = rss_anon_kb(pid)
    close_all(socks)
    wait_fds(pid, fds + 4)
    return {
        "tls_handshakes": count, "tls_seconds": round(elapsed, 2),
        "cpu_us_per_tls_handshake": round((cpu1 - cpu0) * 1e6 / count, 1),
        "kb_per_idle_tls_connection": round((rss1 - rss0) / count, 2),
    }


def measure_latency(paths: dict[str, list[int]], connections: int, rate: float, seconds: float) -> dict:
    """Figure 4: every path in one paced loop. A path with several ports (direct) spreads its connections."""
    groups: dict[str, list[socket.socket]] = {}
    try:
        for name, ports in paths.items():
            groups[name] = []
            for i, port in enumerate(ports):
                share = connections // len(ports) + (1 if i < connections % len(ports) else 0)
                groups[name] += open_websockets(port, share, path="/echo")
        run_echoes(groups, 0, 1, None, 60)  # warm-up round, not counted
        stats = run_echoes(groups, rate, None, seconds, seconds + 60)
    finally:
        for socks in groups.values():
            close_all(socks)
    result = {}
    for name, st in stats.items():
        lat = sorted(st["latencies"])
        result[name] = {
            "latency_samples": len(lat),
            "p50_ms": round(percentile(lat, 50) * 1e3, 3), "p90_ms": round(percentile(lat, 90) * 1e3, 3),
            "p99_ms": round(percentile(lat, 99) * 1e3, 3), "p999_ms": round(percentile(lat, 99.9) * 1e3, 3),
            "max_ms": round(lat[-1] * 1e3, 3) if lat else float("nan"),
        }
    return result


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=".build/release/switchboard")
    parser.add_argument("--connections", type=int, default=4000, help="idle connections (figures 1, 2)")
    parser.add_argument("--frame-connections", type=int, default=200, help="echo connections (figure 3)")
    parser.add_argument("--frames", type=int, default=250, help="echoes per connection (figure 3)")
    parser.add_argument("--frame-rate", type=float, default=10000, help="echoes/s in all, 0 = unpaced (figure 3)")
    parser.add_argument("--latency-connections", type=int, default=300, help="connections per path (figure 4)")
    parser.add_argument("--latency-rate", type=float, default=1000, help="echoes/s per path (figure 4)")
    parser.add_argument("--latency-seconds", type=float, default=10, help="(figure 4)")
    parser.add_argument("--tls-handshakes", type=int, default=2000, help="(figure 5)")
    parser.add_argument("--tls-key-type", choices=["rsa", "ec"], default="rsa",
                        help="rsa: RSA 2048; ec: ECDSA P-256 (figure 5)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin nodes and proxies to CPU 0 and this generator to CPU 1")
    args = parser.parse_args()
    for name in ("connections", "frame_connections", "frames", "latency_connections", "tls_handshakes"):
        if not 1 <= getattr(args, name) <= 9000:
            parser.error(f"--{name.replace('_', '-')} must be 1-9000 (open-files limit 20,000, two per tunnel)")
    if not 0.5 <= args.latency_seconds <= 300 or not 0 <= args.frame_rate <= 1e6 or not 1 <= args.latency_rate <= 1e5:
        parser.error("--latency-seconds 0.5-300, --frame-rate 0-1e6, --latency-rate 1-1e5")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pin = args.pin and (os.cpu_count() or 1) >= 2
    server_cpu = (lambda: os.sched_setaffinity(0, {0})) if pin else None
    if pin:
        os.sched_setaffinity(0, {1})

    procs: list[subprocess.Popen] = []
    work = tempfile.mkdtemp(prefix="bench-balancer-")

    def start(cmd: list[str], log: str) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, log), "w"),
                             preexec_fn=server_cpu)
        procs.append(p)
        return p

    try:
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert, "-newkey",
                        "rsa:2048" if args.tls_key_type == "rsa" else "ec",
                        *([] if args.tls_key_type == "rsa" else ["-pkeyopt", "ec_paramgen_curve:P-256"])],
                       check=True, capture_output=True, timeout=60)
        combined = os.path.join(work, "haproxy.pem")
        with open(combined, "w") as f:
            f.write(open(cert).read() + open(key).read())

        node_ports = []
        for i in range(2):
            p = free_port()
            start([args.binary, "serve", "--port", str(p), "--api-key", "bench", "--trusted-proxy", "127.0.0.1",
                   "--ping-interval", "0", "--log-level", "warning", "--echo-endpoint",
                   "--max-connections-per-ip", "1000000",
                   "--commands-per-second", "1000000", "--command-burst", "1000000"], f"node{i}.log")
            node_ports.append(p)
        for p in node_ports:
            wait_port(p)
        nodes = sum((["--node", f"127.0.0.1:{p}"] for p in node_ports), [])
        ours, ours_tls = free_port(), free_port()
        balancer = start([args.binary, "balance", "--listen", f"127.0.0.1:{ours}", "--threads", "2",
                          "--algorithm", "least-conn", "--log-level", "warning"] + nodes, "balancer.log")
        balancer_tls = start([args.binary, "balance", "--listen", f"127.0.0.1:{ours_tls}", "--threads", "2",
                              "--algorithm", "least-conn", "--log-level", "warning",
                              "--tls-cert", cert, "--tls-key", key] + nodes, "balancer-tls.log")
        theirs, theirs_tls = free_port(), free_port()
        haproxies = []
        for label, port, bind, extra in (
                ("haproxy", theirs, "", ""),
                ("haproxy-tls", theirs_tls, f" ssl crt {combined} alpn http/1.1 ssl-min-ver TLSv1.2",
                 "    http-request set-header X-Forwarded-Proto https\n")):
            cfg = os.path.join(work, f"{label}.cfg")
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
    bind 127.0.0.1:{port}{bind}
    http-request del-header X-Forwarded-For
{extra}    default_backend nodes
backend nodes
    balance leastconn
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 2
    server n1 127.0.0.1:{node_ports[0]} check
    server n2 127.0.0.1:{node_ports[1]} check
""")
            haproxies.append(start(["haproxy", "-f", cfg, "-db"], f"{label}.log"))
        haproxy, haproxy_tls = haproxies
        for p in (ours, ours_tls, theirs, theirs_tls):
            wait_port(p)
        time.sleep(2)  # every proxy has seen both nodes up (checks every 1 s, rise 2)

        client_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_tls.check_hostname = False
        client_tls.verify_mode = ssl.CERT_NONE
        client_tls.minimum_version = client_tls.maximum_version = ssl.TLSVersion.TLSv1_3
        client_tls.set_alpn_protocols(["http/1.1"])

        a = {"proxy": "switchboard balance"}
        b = {"proxy": "haproxy 2.6 nbthread 2"}
        for r, pid, port in ((a, balancer.pid, ours), (b, haproxy.pid, theirs)):
            r.update(measure_handshakes(pid, port, args.connections))
        for r, pid, port in ((a, balancer.pid, ours), (b, haproxy.pid, theirs)):
            r.update(measure_frames(pid, port, args.frame_connections, args.frames, args.frame_rate))
        for r, pid, port in ((a, balancer_tls.pid, ours_tls), (b, haproxy_tls.pid, theirs_tls)):
            r.update(measure_tls(pid, port, args.tls_handshakes, client_tls))
        latency = measure_latency({"direct": node_ports, "ours": [ours], "theirs": [theirs]},
                                  args.latency_connections, args.latency_rate, args.latency_seconds)
        direct = latency["direct"]
        for r, name in ((a, "ours"), (b, "theirs")):
            r.update(latency[name])
            r["added_p99_ms"] = round(r["p99_ms"] - direct["p99_ms"], 3)
            r["added_p50_ms"] = round(r["p50_ms"] - direct["p50_ms"], 3)
            r["pinned"] = pin
        print(json.dumps(a))
        print(json.dumps(b))
        print(json.dumps({"proxy": "direct to the nodes", **direct}))
        latency_target = max(1.25 * b["added_p99_ms"], b["added_p99_ms"] + 0.5)
        ratios = {
            "memory_ratio": ratio(a["kb_per_idle_connection"], b["kb_per_idle_connection"]),
            "cpu_per_handshake_ratio": ratio(a["cpu_us_per_handshake"], b["cpu_us_per_handshake"]),
            "cpu_per_frame_ratio": ratio(a["cpu_us_per_frame"], b["cpu_us_per_frame"]),
            "cpu_per_tls_handshake_ratio": ratio(a["cpu_us_per_tls_handshake"], b["cpu_us_per_tls_handshake"]),
            "added_p99_ms": a["added_p99_ms"], "haproxy_added_p99_ms": b["added_p99_ms"],
            "added_p99_target_ms": round(latency_target, 3),
        }
        print(json.dumps(ratios))

        rows = [
            ("memory per idle proxied connection (KB)", "kb_per_idle_connection", ratios["memory_ratio"], 1.5,
             "<= 1.5x (stretch <= 1x)"),
            ("CPU per proxied handshake (us)", "cpu_us_per_handshake", ratios["cpu_per_handshake_ratio"], 1.5,
             "<= 1.5x"),
            ("CPU per forwarded frame, per direction (us)", "cpu_us_per_frame", ratios["cpu_per_frame_ratio"], 1.3,
             "<= 1.3x"),
            ("CPU per TLS 1.3 handshake + upgrade (us)", "cpu_us_per_tls_handshake",
             ratios["cpu_per_tls_handshake_ratio"], 1.3, "<= 1.3x"),
        ]
        print()
        print("| figure | switchboard balance | HAProxy 2.6 | ratio | target | met |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, field, rt, limit, target in rows:
            print(f"| {label} | {a[field]} | {b[field]} | {rt}x | {target} | {'met' if rt <= limit else 'NOT met'} |")
        print(f"| added p99 latency (ms; direct p99 {direct['p99_ms']}) | {a['added_p99_ms']} | {b['added_p99_ms']}"
              f" | {ratio(a['added_p99_ms'], b['added_p99_ms'])}x | <= max(1.25x, +0.5 ms) = {latency_target:.3f} ms"
              f" | {'met' if a['added_p99_ms'] <= latency_target else 'NOT met'} |")
        print(f"\n(CPU pinning: {'nodes and proxies on CPU 0, load generator on CPU 1' if pin else 'off'};"
              f" logs and configs in {work})")
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
