"""Fixtures for the browser tests: real `switchboard serve` nodes (and Redis,
and HAProxy) on loopback ports, headless Chromium through Selenium.

Pages come from the nodes (`GET /` and `GET /switchboard.js`, the copies
built into the binary). With SB_BROWSER_PAGE=repo they come from the repo's
clients/js/ files instead (through HAProxy, which sends `/` and
`/switchboard.js` to a small static server), to try client changes without
rebuilding the binary.

Every process is stopped by PID in a finalizer; screenshots, browser console
logs, node and HAProxy logs of each test land in IntegrationTests/browser/artifacts/<test>/.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))

from sbclient import Node, RedisStartError, binary_path, redis_binary, start_redis  # noqa: E402

from browserlib import CHROMEDRIVER, CHROMIUM, PAGE_MODE, HAProxy, Page, StaticServer, haproxy_binary, make_driver  # noqa: E402

ARTIFACTS = os.environ.get("SB_BROWSER_ARTIFACTS", os.path.join(HERE, "artifacts"))

_ALL_PROCS: list = []        # nodes, redis servers, haproxies: the atexit net
_SCREENSHOTS: list[str] = []


def _stop_all() -> None:
    for p in list(_ALL_PROCS):
        try:
            p.stop()
        except Exception:
            pass


atexit.register(_stop_all)


def _sigterm_to_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    if PAGE_MODE not in ("node", "repo"):
        raise pytest.UsageError(f"SB_BROWSER_PAGE must be 'node' or 'repo', not {PAGE_MODE!r}")
    path = binary_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise pytest.UsageError(f"switchboard binary not found at {path}; build it with `swift build` "
                                "or set SWITCHBOARD_BIN")
    for what, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not os.access(p, os.X_OK):
            raise pytest.UsageError(f"{what} not found at {p}: apt-get install chromium chromium-driver "
                                    "(scripts/test.sh does it), or set CHROMIUM_BIN / CHROMEDRIVER_BIN")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _SCREENSHOTS:
        terminalreporter.write_sep("-", "browser screenshots")
        for p in _SCREENSHOTS:
            terminalreporter.write_line(p)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
               for w in ("setup", "call"))


@pytest.fixture
def artifacts(request) -> str:
    """This test's output directory (emptied first)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    path = os.path.join(ARTIFACTS, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    return path


# --------------------------------------------------------------------------
# Nodes and Redis
# --------------------------------------------------------------------------


class NodeFactory:
    def __init__(self, artifacts: str, request: pytest.FixtureRequest):
        self.artifacts = artifacts
        self.request = request
        self.nodes: list[Node] = []
        self.api_key = "browser-" + secrets.token_hex(8)

    def start(self, *extra: str, name: str | None = None, broker: str | None = None,
              ping_interval: float | None = None, drain_seconds: float = 1, port: int = 0,
              config_text: str | None = None) -> Node:
        name = name or f"node{len(self.nodes)}"
        args = [binary_path(), "serve", "--host", "127.0.0.1", "--port", str(port), "--api-key", self.api_key,
                "--log-level", "info", "--node-name", name, "--drain-seconds", _num(drain_seconds)]
        if broker:
            args += ["--broker", broker]
        if ping_interval is not None:
            args += ["--ping-interval", _num(ping_interval)]
        if config_text is not None:
            cfg = os.path.join(self.artifacts, f"{name}.yaml")
            with open(cfg, "w") as f:
                f.write(config_text)
            args += ["--config", cfg]
        args += list(extra)
        log_path = os.path.join(self.artifacts, f"{name}.log")
        if os.path.exists(log_path):  # the same name again (a restart): keep both logs
            log_path = os.path.join(self.artifacts, f"{name}.{len(self.nodes)}.log")
        node = Node(args, api_key=self.api_key, log_path=log_path)
        node.name = name
        self.nodes.append(node)
        _ALL_PROCS.append(node)
        # The node id (what connect results and /stats call `node`).
        node.node_id = None
        try:
            node.node_id = node.http("GET", "/stats").json().get("node")
        except Exception:
            pass
        if not node.node_id:
            try:
                infos = node.api_result("info", {}).get("nodes", [])
                node.node_id = next((i.get("id") for i in infos if i.get("name") == name), None)
            except Exception:
                pass
        return node

    def stop_all(self) -> None:
        failed = _failed(self.request)
        for n in self.nodes:
            try:
                os.kill(n.pid, signal.SIGCONT)  # a test may have stopped it
            except OSError:
                pass
            n.stop(timeout=5)
            if n in _ALL_PROCS:
                _ALL_PROCS.remove(n)
            if failed:
                print(f"\n--- {n.name} pid {n.pid} exit {n.process.returncode}; log {n.log_path}; tail:\n{n.log_tail(30)}")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


@pytest.fixture
def node_factory(artifacts, request):
    f = NodeFactory(artifacts, request)
    try:
        yield f
    finally:
        f.stop_all()


@pytest.fixture
def redis_server(artifacts, request):
    if shutil.which(redis_binary()) is None:
        pytest.fail(f"{redis_binary()} not found: scripts/test.sh installs Debian's redis-server")
    workdir = os.path.join(artifacts, "redis")
    os.makedirs(workdir, exist_ok=True)
    try:
        server = start_redis(os.path.join(artifacts, "redis.log"), workdir, _ALL_PROCS)
    except RedisStartError as e:
        pytest.fail(str(e))
    try:
        yield server
    finally:
        server.stop()
        _ALL_PROCS.remove(server)


# --------------------------------------------------------------------------
# HAProxy, static files, the page's origin
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def static_server():
    if PAGE_MODE != "repo":
        yield None
        return
    s = StaticServer()
    try:
        yield s
    finally:
        s.stop()


class ProxyFactory:
    def __init__(self, artifacts: str, static: StaticServer | None, request: pytest.FixtureRequest):
        self.artifacts = artifacts
        self.static = static
        self.request = request
        self.proxies: list[HAProxy] = []

    def start(self, nodes: list[Node], deny: tuple[str, ...] = (), routes: dict[str, int] | None = None) -> HAProxy:
        if haproxy_binary() is None:
            pytest.fail("haproxy not found: apt-get install haproxy (scripts/test.sh does it), or set HAPROXY_BIN")
        p = HAProxy([n.port for n in nodes], self.artifacts, name=f"haproxy{len(self.proxies)}", deny=deny,
                    static_port=self.static.port if self.static else None, routes=routes)
        self.proxies.append(p)
        _ALL_PROCS.append(p)
        return p

    def origin(self, nodes: list[Node], deny: tuple[str, ...] = ()) -> str:
        """Where to open the demo page: the node itself, or HAProxy when paths
        are denied, there are several nodes, or the page comes from the repo."""
        if len(nodes) == 1 and not deny and self.static is None:
            return nodes[0].http_url
        return self.start(nodes, deny).url

    def stop_all(self) -> None:
        for p in self.proxies:
            p.stop()
            if p in _ALL_PROCS:
                _ALL_PROCS.remove(p)
            if _failed(self.request):
                print(f"\n--- haproxy pid {p.pid} log {p.log_path}; tail:\n{p.log_tail(20)}")


@pytest.fixture
def proxies(artifacts, static_server, request):
    f = ProxyFactory(artifacts, static_server, request)
    try:
        yield f
    finally:
        f.stop_all()


# --------------------------------------------------------------------------
# Browsers
# --------------------------------------------------------------------------


class Browsers:
    """`open(url, label)` starts a headless Chromium (its own process, so
    two pages never share a connection pool or get throttled as background
    tabs) on a page. At teardown: a screenshot and the console log of each,
    then quit (chromedriver's PID is killed if quit fails)."""

    def __init__(self, artifacts: str, request: pytest.FixtureRequest):
        self.artifacts = artifacts
        self.request = request
        self.pages: list[Page] = []

    def open(self, url: str, label: str | None = None) -> Page:
        label = label or f"page{len(self.pages)}"
        driver = make_driver(os.path.join(self.artifacts, f"{label}.chromedriver.log"))
        page = Page(driver, label)
        self.pages.append(page)
        page.open(url)
        return page

    def close_all(self) -> None:
        failed = _failed(self.request)
        for page in self.pages:
            shot = page.screenshot(os.path.join(self.artifacts, f"{page.label}.png"))
            if shot:
                _SCREENSHOTS.append(shot)
                print(f"\nscreenshot: {shot}")
            if failed:
                print("\n" + page.describe())
            try:
                with open(os.path.join(self.artifacts, f"{page.label}.console.json"), "w") as f:
                    json.dump(page.pull_console(), f, indent=1)
            except Exception:
                pass
            svc = getattr(page.driver, "service", None)
            proc = getattr(svc, "process", None)
            try:
                page.driver.quit()
            except Exception:
                pass
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def browsers(artifacts, request):
    b = Browsers(artifacts, request)
    try:
        yield b
    finally:
        b.close_all()
