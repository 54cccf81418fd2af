"""Helpers for the `switchboard balance` end-to-end tests (IntegrationTests/e2e/test_balancer.py).

- `BalancerFactory`: starts `switchboard balance` processes in front of given nodes and always stops
  them. A balancer is an `sbclient.Node` (its stdout line carries `ws://HOST:PORT/ws`), so every
  sbclient helper that takes a node (connect, SSEStream, lp_poll, node.http) goes through it.
- `admin_nodes`, `metrics`: the balancer's admin API.
- `raw_exchange`: send raw bytes on a plain socket, read the answer until EOF (bounded).
- `fd_count`, `wait_until`: resource checks with deadlines.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from typing import Any, Callable

import requests

from sbclient import Node, binary_path

ADMIN_RE = re.compile(r"admin http://([^\s/]+):(\d+)/")
NODE_ID_RE = re.compile(r"switchboard node (\S+) listening")


def node_id(node: Node) -> str:
    """The node id a `serve` process printed (what a `connect` reply's `node` holds)."""
    m = NODE_ID_RE.search(node.listen_line)
    assert m, node.listen_line
    return m.group(1)


class BalancerFactory:
    """`start(nodes, *extra)` launches a balancer on a free loopback port with an admin port."""

    def __init__(self, tmp_path, request):
        self.tmp_path = tmp_path
        self.request = request
        self.balancers: list[Node] = []

    def start(self, nodes: list[Node], *extra: str, check_interval: float = 0.2,
              log_level: str = "info", drain_seconds: float = 2, tls: bool = False,
              env: dict[str, str] | None = None, user: str | None = None) -> Node:
        args = [binary_path(), "balance", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                "--check-interval", str(check_interval), "--log-level", log_level,
                "--drain-seconds", str(drain_seconds)]
        for n in nodes:
            args += ["--node", f"127.0.0.1:{n.port}"]
        args += list(extra)
        log_path = str(self.tmp_path / f"balancer{len(self.balancers)}.log")
        b = (TLSBalancer if tls else Node)(args, api_key="", log_path=log_path, env=env, user=user)
        self.balancers.append(b)
        m = ADMIN_RE.search(b.listen_line)
        assert m, f"no admin address in {b.listen_line!r}"
        b.admin_url = f"http://{m.group(1)}:{m.group(2)}"
        return b

    def stop_all(self) -> None:
        failed = any(getattr(self.request.node, f"rep_{w}", None) is not None
                     and getattr(self.request.node, f"rep_{w}").failed for w in ("setup", "call"))
        for b in self.balancers:
            b.stop(timeout=5)
            if failed:
                print(f"\n--- balancer pid {b.pid} args {' '.join(b.args[1:])}\n"
                      f"--- exit {b.process.returncode}; stderr tail:\n{b.log_tail()}")


TLS_LISTEN_RE = re.compile(r"wss://(\[[^\]]+\]|[^\s/:]+):(\d+)/ws")


class TLSBalancer(Node):
    """A balancer started with --tls-cert/--tls-key: its line says `wss://HOST:PORT/ws`."""

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stdout_lines):
                m = TLS_LISTEN_RE.search(line)
                if m:
                    self.host, self.port = m.group(1).strip("[]"), int(m.group(2))
                    self.listen_line = line
                    self.ws_url = f"wss://{m.group(1)}:{self.port}/ws"
                    self.http_url = f"https://{m.group(1)}:{self.port}"
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"balancer exited with {self.process.returncode}: {self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"no wss:// line within {timeout}s: {self.stdout_lines} {self.log_tail()}")


def make_certificate(directory, kind: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (RSA 2048 or ECDSA P-256) made with the openssl CLI."""
    cert, key = os.path.join(str(directory), f"{kind}-cert.pem"), os.path.join(str(directory), f"{kind}-key.pem")
    new_key = ["-newkey", "rsa:2048"] if kind == "rsa" else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    subprocess.run(["openssl", "req", "-x509", *new_key, "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def admin_get(balancer: Node, path: str, timeout: float = 5.0) -> requests.Response:
    with requests.Session() as s:
        s.trust_env = False
        return s.get(balancer.admin_url + path, timeout=timeout)


def admin_nodes(balancer: Node) -> dict:
    r = admin_get(balancer, "/admin/nodes")
    assert r.status_code == 200, r.text
    return r.json()


def metrics(balancer: Node) -> dict[str, float]:
    """`/metrics` as {'name{labels}': value}."""
    r = admin_get(balancer, "/metrics")
    assert r.status_code == 200, r.text
    out: dict[str, float] = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Polls `cond` until it returns something truthy; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, shutdown_write: bool = False,
                 chunk_delay: float | None = None, chunk: int = 1) -> tuple[bytes, float]:
    """Sends `data` (all at once, or `chunk` bytes every `chunk_delay` s until the peer answers or
    closes), reads until EOF or `timeout`; returns (bytes read, seconds until the first answer byte)."""
    start = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    first: float | None = None
    try:
        if chunk_delay is None:
            s.sendall(data)
            if shutdown_write:
                s.shutdown(socket.SHUT_WR)
        else:
            s.setblocking(False)
            for i in range(0, len(data), chunk):
                try:
                    s.send(data[i:i + chunk])
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    break
                try:
                    got = s.recv(65536)
                    if got:
                        received += got
                        first = first or time.monotonic() - start
                    break
                except BlockingIOError:
                    pass
                if time.monotonic() - start > timeout:
                    break
                time.sleep(chunk_delay)
            s.setblocking(True)
        deadline = start + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                got = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not got:
                break
            if first is None:
                first = time.monotonic() - start
            received += got
    finally:
        s.close()
    return received, (first if first is not None else float("inf"))


def status_of(response: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    return int(m.group(1)) if m else None


def node_counts(balancer: Node) -> dict[str, int]:
    """Active connections per node id as the balancer counts them."""
    return {n["id"]: n["active"] for n in admin_nodes(balancer)["nodes"]}


def node_ws_connections(node: Node) -> int:
    """WebSocket connections the node itself reports in /metrics."""
    r = node.http("GET", "/metrics")
    for line in r.text.splitlines():
        if line.startswith("switchboard_connections") and 'transport="websocket"' in line:
            return int(float(line.rpartition(" ")[2]))
    return 0


def json_lines(text: str) -> list[Any]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def rss_anon_kb(pid: int) -> int:
    """Anonymous resident memory of a process (heap and stacks, no mapped files), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/status")


# --------------------------------------------------------------------------
# HAProxy and nginx with the shipped configurations (deploy/)
# --------------------------------------------------------------------------

import shutil  # noqa: E402
import signal as _signal  # noqa: E402

from sbclient import REPO_ROOT, free_port  # noqa: E402

HAPROXY_CFG = os.path.join(REPO_ROOT, "deploy", "haproxy", "haproxy.cfg")
NGINX_CONF = os.path.join(REPO_ROOT, "deploy", "nginx", "nginx.conf")


def proxy_binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ProxyProcess:
    """HAProxy or nginx running a copy of the shipped config with the example ports replaced by
    run-time ones (`ports`: example port -> real port; nginx's /tmp paths moved under `workdir`).
    Exposes `host`, `port` (the main frontend), `http_url`, like an sbclient.Node, so the sbclient
    helpers work through it. `stop()` by PID, always."""

    def __init__(self, kind: str, workdir, ports: dict[int, int], main_port: int, src: str | None = None):
        self.kind = kind
        self.host = "127.0.0.1"
        self.port = ports[main_port]
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.api_key = ""
        src = src or (HAPROXY_CFG if kind == "haproxy" else NGINX_CONF)
        with open(src) as f:
            text = f.read()
        for example, real in ports.items():
            text = text.replace(f"127.0.0.1:{example}", f"127.0.0.1:{real}")
            text = text.replace(f"agent-port {example}", f"agent-port {real}")
        if kind == "nginx":
            text = text.replace("/tmp/switchboard-nginx", os.path.join(str(workdir), "nginx"))
            # Relative certificate paths are relative to the config's directory: make them absolute.
            text = text.replace("../tls/", os.path.join(os.path.dirname(os.path.abspath(src)), "..", "tls") + "/")
        else:
            text = text.replace("crt deploy/tls/", "crt " + os.path.join(REPO_ROOT, "deploy", "tls") + "/")
        self.cfg_path = os.path.join(str(workdir), os.path.basename(src))
        with open(self.cfg_path, "w") as f:
            f.write(text)
        self.log_path = os.path.join(str(workdir), f"{kind}.log")
        self._log = open(self.log_path, "wb")
        binary = proxy_binary(kind)
        assert binary, f"{kind} not installed (scripts/test.sh installs it with apt-get)"
        args = ([binary, "-f", self.cfg_path, "-db"] if kind == "haproxy"
                else [binary, "-c", self.cfg_path, "-g", "daemon off;"])
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        self.pid = self.process.pid
        try:
            wait_until(lambda: port_open(self.port) or self.process.poll() is not None, 10, f"{kind} listening")
            assert self.process.poll() is None, f"{kind} exited: {self.log_tail()}"
        except BaseException:
            self.stop()
            raise

    def http(self, method: str, path: str, timeout: float = 5.0, **kw: Any) -> requests.Response:
        with requests.Session() as s:
            s.trust_env = False
            return s.request(method, self.http_url + path, timeout=timeout, **kw)

    def api_result(self, method: str, body: Any = None) -> Any:
        r = self.http("POST", f"/api/{method}", json=body or {}, headers={"Authorization": f"apikey {self.api_key}"})
        assert r.status_code == 200, r.text
        return r.json()["result"]

    def log_tail(self, n: int = 40) -> str:
        try:
            self._log.flush()
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except (OSError, ValueError):
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            # nginx: SIGQUIT is a graceful stop; SIGTERM is fast for both.
            self.process.send_signal(_signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        try:
            self._log.close()
        except OSError:
            pass
