"""Helpers for the browser tests: a headless Chromium page wrapper, HAProxy
in front of nodes, and a static file server for the repo's copy of the demo.

Every wait here has a count and a time limit; every process is stopped by PID.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
CLIENT_DIR = os.path.join(REPO_ROOT, "clients", "js")

# Where pages come from: "node" (the copies built into the binary) or "repo" (clients/js/ through HAProxy).
PAGE_MODE = os.environ.get("SB_BROWSER_PAGE", "node")

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")


def haproxy_binary() -> str | None:
    return os.environ.get("HAPROXY_BIN") or shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return False


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`, by PID. Safe to call twice."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# --------------------------------------------------------------------------
# Static server: the repo's clients/js files at / and /switchboard.js
# --------------------------------------------------------------------------


class StaticServer:
    """Serves clients/js/demo.html at `/` and clients/js/switchboard.js at
    `/switchboard.js` (read fresh per request), for SB_BROWSER_PAGE=repo:
    the tests then run the repo's files instead of the copies built into
    the binary."""

    FILES = {"/": ("demo.html", "text/html; charset=utf-8"),
             "/demo.html": ("demo.html", "text/html; charset=utf-8"),
             "/switchboard.js": ("switchboard.js", "text/javascript; charset=utf-8")}

    def __init__(self) -> None:
        files = self.FILES

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path not in files:
                    self.send_error(404)
                    return
                name, ctype = files[path]
                with open(os.path.join(CLIENT_DIR, name), "rb") as f:
                    body = f.read()
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(2)


# --------------------------------------------------------------------------
# HAProxy
# --------------------------------------------------------------------------

# 127.0.0.1:5678 [01/Dec/2026:10:00:00.123] fe nodes/n0 0/0/0/1/1 200 170 - - ---- 1/1/0/0/0 0/0 "GET /stats HTTP/1.1"
HTTPLOG_RE = re.compile(r"\] (\S+) ([^\s/]+)/(\S+) \S+ (-?\d+) .*\"(\w+) (\S+)")


class HAProxy:
    """`haproxy -db` with a config written here: plain round-robin over the
    nodes (no cookie, no stickiness), one request per server connection
    (`option http-server-close`) so that successive requests really
    alternate, long timeouts for SSE streams and long polls, health checks
    on /healthz and redispatch so that a dead node is skipped. `deny` paths
    are answered 403 (e.g. `/ws` to refuse WebSockets). `static_port`
    routes `/` and `/switchboard.js` to a StaticServer. Every request is
    logged (httplog) to the log file; `requests()` parses it."""

    def __init__(self, node_ports: list[int], workdir: str, name: str = "haproxy", deny: tuple[str, ...] = (),
                 static_port: int | None = None, routes: dict[str, int] | None = None, start_timeout: float = 10.0):
        self.routes = dict(routes or {})  # HAProxy condition ("{ path /ws }") -> port of another backend
        binary = haproxy_binary()
        if binary is None:
            raise RuntimeError("haproxy not found: scripts/test.sh installs Debian's haproxy (or set HAPROXY_BIN)")
        self.node_ports = list(node_ports)
        self.cfg_path = os.path.join(workdir, f"{name}.cfg")
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.proc: subprocess.Popen | None = None
        # The runtime API socket (`show sess`); a short path: unix socket paths are limited to ~107 bytes.
        self.sock_dir = tempfile.mkdtemp(prefix="sb-haproxy-")
        self.sock_path = os.path.join(self.sock_dir, "admin.sock")
        last_error = ""
        for _ in range(3):  # a free port may be taken between probe and bind
            self.port = _free_port()
            with open(self.cfg_path, "w") as f:
                f.write(self.config(deny, static_port))
            self._log = open(self.log_path, "wb")
            self.proc = subprocess.Popen([binary, "-f", self.cfg_path, "-db"], stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)
            self.pid = self.proc.pid
            if wait_port(self.port, start_timeout, self.proc):
                self.url = f"http://127.0.0.1:{self.port}"
                return
            stop_process(self.proc)
            self._log.close()
            last_error = self.log_tail()
        raise RuntimeError(f"haproxy did not start listening:\n{last_error}")

    def config(self, deny: tuple[str, ...], static_port: int | None) -> str:
        lines = [
            "# written by IntegrationTests/browser/browserlib.py",
            "global",
            "    maxconn 4096",
            "    log stdout format raw local0 info",
            f"    stats socket {self.sock_path} mode 600 level admin",
            "defaults",
            "    mode http",
            "    log global",
            "    option httplog",
            "    option dontlognull",
            "    timeout connect 2s",
            "    timeout client 1h",
            "    timeout server 1h",
            "    timeout tunnel 1h",
            "    timeout http-request 10s",
            "    timeout http-keep-alive 10s",
            "    option http-server-close",
            "    retries 3",
            "    option redispatch 1",
            "frontend fe",
            f"    bind 127.0.0.1:{self.port}",
        ]
        for i, path in enumerate(deny):
            lines.append(f"    http-request deny deny_status 403 if {{ path {path} }}")
        for i, cond in enumerate(self.routes):
            lines.append(f"    use_backend route{i} if {cond}")
        if static_port is not None:
            lines.append("    use_backend static if { path / } || { path /demo.html } || { path /switchboard.js }")
        lines += [
            "    default_backend nodes",
            "backend nodes",
            "    balance roundrobin",
            "    option httpchk GET /healthz",
            # A refused connection is retried on the other node at once (redispatch); the checks only
            # keep new requests off a dead node. Tolerant of a loaded machine (debug build, 2 cores).
            "    timeout check 3s",
            "    default-server inter 500ms fastinter 250ms downinter 1s fall 2 rise 1",
        ]
        for i, p in enumerate(self.node_ports):
            lines.append(f"    server n{i} 127.0.0.1:{p} check")
        if static_port is not None:
            lines += ["backend static", f"    server static 127.0.0.1:{static_port}"]
        for i, port in enumerate(self.routes.values()):
            lines += [f"backend route{i}", f"    server r{i} 127.0.0.1:{port}"]
        return "\n".join(lines) + "\n"

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def requests(self) -> list[dict]:
        """Every logged request so far: {backend, server, status, method, path}."""
        out = []
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return out
        for line in text.splitlines():
            m = HTTPLOG_RE.search(line)
            if m:
                out.append({"backend": m.group(2), "server": m.group(3), "status": int(m.group(4)),
                            "method": m.group(5), "path": m.group(6)})
        return out

    def sessions(self) -> list[dict]:
        """The sessions open right now (`show sess`): {be, srv, age, active}, age in seconds,
        active when a request is with the server (a server-side connection is open; an idle
        keep-alive client session keeps the `srv` of its last request but has none)."""
        out = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(self.sock_path)
                s.sendall(b"show sess\n")
                data = b""
                for _ in range(1000):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return out
        for line in data.decode("utf-8", "replace").splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv and not kv.startswith(("rq[", "rp[")))
            if "be" in f:
                age = 0
                for n, unit in re.findall(r"(\d+)([dhms])", f.get("age", "")):
                    age += int(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
                m = re.search(r"fd=(-?\d+)", f.get("scb", ""))
                out.append({"be": f["be"], "srv": f.get("srv"), "age": age, "active": bool(m and int(m.group(1)) >= 0)})
        return out

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        try:
            self._log.close()
        except OSError:
            pass
        shutil.rmtree(self.sock_dir, ignore_errors=True)


class CannedHTTPServer:
    """Answers every request with one status and JSON body; counts them."""

    def __init__(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        outer = self
        self.hits = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.hits += 1
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(2)


class BrokenWebSocketServer:
    """A WebSocket endpoint that accepts the upgrade and closes (1011) at once,
    before any connect reply: a transport that opens but never works."""

    def __init__(self) -> None:
        import asyncio
        from websockets.asyncio.server import serve

        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        async def handler(ws) -> None:
            self.accepted += 1
            await ws.close(1011, "backend unavailable")

        async def main() -> None:
            self._server = await serve(handler, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            await self._server.wait_closed()

        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(main(),), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the broken WebSocket server did not start")

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------


def make_driver(log_path: str) -> webdriver.Chrome:
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--no-proxy-server", "--no-first-run", "--disable-extensions", "--disable-gpu",
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=log_path)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    return driver


MESSAGES_JS = """
return Array.from(document.querySelectorAll('#messages .msg')).map(e => [
  e.dataset.offset === undefined ? null : Number(e.dataset.offset),
  e.dataset.text === undefined ? e.textContent : e.dataset.text]);
"""

STATUS_JS = """
const t = id => { const e = document.getElementById(id); return e ? e.textContent : null; };
const a = (id, k) => { const e = document.getElementById(id); return e ? e.getAttribute(k) : null; };
return {state: a('state', 'data-state'), stateText: t('state'), transport: t('transport'), node: t('node'),
        clients: t('clients'), nodes: t('nodes'), rate: t('rate'), sub: a('sub', 'data-state'),
        client: window.sb ? window.sb.state + '/' + window.sb.transport : null};
"""


class Page:
    """One browser (its own Chromium) on the demo page."""

    def __init__(self, driver: webdriver.Chrome, label: str):
        self.driver = driver
        self.label = label
        self.console: list[dict] = []

    def open(self, url: str) -> "Page":
        self.driver.get(url)
        return self

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def status(self) -> dict:
        return self.js(STATUS_JS)

    def messages(self) -> list[tuple[int | None, str]]:
        return [tuple(x) for x in self.js(MESSAGES_JS)]

    def texts(self) -> list[str]:
        return [t for _, t in self.messages()]

    def log_lines(self, n: int = 25) -> list[str]:
        return self.js("return Array.from(document.querySelectorAll('#messages > div'))"
                       ".slice(-arguments[0]).map(e => e.className + ': ' + e.textContent);", n)

    def pull_console(self) -> list[dict]:
        try:
            self.console += self.driver.get_log("browser")
        except WebDriverException:
            pass
        return self.console

    def describe(self) -> str:
        try:
            st = self.status()
            lines = self.log_lines()
        except WebDriverException as e:
            return f"[{self.label}] page unreadable: {e.msg if hasattr(e, 'msg') else e}"
        console = [f"{c.get('level')} {c.get('message', '')[:300]}" for c in self.pull_console()[-25:]]
        return (f"[{self.label}] status {json.dumps(st)}\n  page log (last lines):\n    "
                + "\n    ".join(lines) + "\n  console (last):\n    " + "\n    ".join(console))

    def wait(self, pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last_exc: Exception | None = None
        for _ in range(int(timeout / interval) + 2):
            try:
                v = pred()
                if v:
                    return v
                last_exc = None
            except WebDriverException as e:  # e.g. during a reload
                last_exc = e
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        raise AssertionError(f"{self.label}: timed out after {timeout}s waiting for {what}"
                             + (f" (last error {last_exc!r:.200})" if last_exc else "") + "\n" + self.describe())

    def wait_ready(self, transport: str | None = None, timeout: float = 30.0) -> dict:
        def ok() -> dict | None:
            st = self.status()
            if st["state"] == "connected" and st["sub"] == "subscribed" and (transport is None or st["transport"] == transport):
                return st
            return None
        return self.wait(ok, timeout, f"connected{' over ' + transport if transport else ''} and subscribed")

    def send(self, text: str, enter: bool = False) -> None:
        box = self.driver.find_element(By.ID, "text")
        box.clear()
        if enter:
            box.send_keys(text + Keys.ENTER)
        else:
            box.send_keys(text)
            self.driver.find_element(By.ID, "send").click()

    def wait_texts(self, expected: list[str], timeout: float = 20.0, exact: bool = False) -> list[tuple[int | None, str]]:
        """Until every expected text is shown (exact: the list of texts equals `expected`)."""
        def ok() -> list | None:
            msgs = self.messages()
            texts = [t for _, t in msgs]
            if exact:
                return msgs if texts == expected else None
            return msgs if all(e in texts for e in expected) else None
        return self.wait(ok, timeout, f"messages {expected[:3]}...{expected[-2:]} ({len(expected)})"
                         + (" exactly" if exact else ""), interval=0.2)

    def screenshot(self, path: str) -> str | None:
        try:
            self.driver.save_screenshot(path)
            return path
        except WebDriverException:
            return None


def assert_once_in_order(msgs: list[tuple[int | None, str]], label: str = "") -> None:
    offsets = [o for o, _ in msgs]
    assert all(o is not None for o in offsets), f"{label}: messages without data-offset: {msgs[:10]}"
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), \
        f"{label}: offsets not strictly increasing: {offsets}"


def page_url(origin: str, transport: str | None = None, name: str | None = None, channel: str | None = None,
             debug: bool = True) -> str:
    """The demo page's URL with its query parameters."""
    from urllib.parse import urlencode
    q: dict[str, str] = {}
    if transport:
        q["transport"] = transport
    if name:
        q["name"] = name
    if channel:
        q["channel"] = channel
    if debug:
        q["debug"] = "1"
    return origin.rstrip("/") + "/" + ("?" + urlencode(q) if q else "")
