"""Fixtures: start real `switchboard serve` nodes on loopback, always stop them."""

from __future__ import annotations

import atexit
import functools
import os
import secrets
import shutil
import signal
import subprocess

import pytest

from sbclient import OPEN_PERMISSIONS_YAML, Node, RedisServer, RedisStartError, binary_path, redis_binary, start_redis
from sbrediscluster import RedisCluster, redis_cli_binary, start_redis_cluster

_ALL_NODES: list[Node] = []
_ALL_REDIS: list[RedisServer | RedisCluster] = []  # each gets stop(timeout=2) in _stop_all


def _stop_all() -> None:
    for n in list(_ALL_NODES):
        try:
            n.stop(timeout=2)
        except Exception:
            pass
    for r in list(_ALL_REDIS):
        try:
            r.stop(timeout=2)
        except Exception:
            pass


# Safety net for an interrupted run: no node outlives the test process.
atexit.register(_stop_all)


def _sigterm_to_interrupt(signum, frame) -> None:
    # A SIGTERM (e.g. from `timeout`) ends the run like Ctrl-C, so that the
    # fixtures' finalizers stop every node and redis-server by PID.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    path = binary_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise pytest.UsageError(
            f"switchboard binary not found at {path}; build it with `swift build` "
            "or set SWITCHBOARD_BIN")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


class NodeFactory:
    """`start(...)` launches a node with the given options; all are stopped at teardown."""

    def __init__(self, tmp_path, request: pytest.FixtureRequest):
        self.tmp_path = tmp_path
        self.request = request
        self.nodes: list[Node] = []

    def write_config(self, text: str, name: str = "switchboard.yaml") -> str:
        path = self.tmp_path / name
        path.write_text(text)
        return str(path)

    def start(self, *extra: str, api_key: str | None = None, ping_interval: float | None = None,
              pong_timeout: float | None = None, token_secret: str | None = None,
              config_text: str | None = None, config_name: str = "switchboard.yaml",
              drain_seconds: float | None = 2, node_name: str | None = None,
              log_level: str = "info", env: dict[str, str] | None = None,
              open_permissions: bool = True, command_limits: bool = False, user: str | None = None) -> Node:
        api_key = api_key or "e2e-" + secrets.token_hex(8)
        args = [binary_path(), "serve", "--host", "127.0.0.1", "--port", "0",
                "--api-key", api_key, "--log-level", log_level]
        if ping_interval is not None:
            args += ["--ping-interval", _num(ping_interval)]
        if pong_timeout is not None:
            args += ["--pong-timeout", _num(pong_timeout)]
        if token_secret is not None:
            args += ["--token-secret", token_secret]
            if open_permissions and (config_text is None or config_name.endswith((".yaml", ".yml"))):
                config_text = OPEN_PERMISSIONS_YAML + (config_text or "")
        if drain_seconds is not None:
            args += ["--drain-seconds", _num(drain_seconds)]
        if node_name is not None:
            args += ["--node-name", node_name]
        if config_text is not None:
            args += ["--config", self.write_config(config_text, config_name)]
        if not command_limits:
            # Most tests send commands as fast as they can on one connection; the default rate
            # (100/s, burst 200) is tested in test_auth.py with command_limits=True.
            args += ["--commands-per-second", "1000000", "--command-burst", "1000000"]
        args += list(extra)
        log_path = str(self.tmp_path / f"node{len(self.nodes)}.log")
        node = Node(args, api_key=api_key, log_path=log_path, env=env, user=user)
        self.nodes.append(node)
        _ALL_NODES.append(node)
        return node

    def stop_all(self) -> None:
        failed = any(getattr(self.request.node, f"rep_{w}", None) is not None
                     and getattr(self.request.node, f"rep_{w}").failed for w in ("setup", "call"))
        for n in self.nodes:
            n.stop(timeout=5)
            if n in _ALL_NODES:
                _ALL_NODES.remove(n)
            if failed:
                print(f"\n--- node pid {n.pid} args {' '.join(n.args[1:])}\n"
                      f"--- exit {n.process.returncode}; stderr tail:\n{n.log_tail()}")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


@pytest.fixture
def node_factory(tmp_path, request):
    f = NodeFactory(tmp_path, request)
    try:
        yield f
    finally:
        f.stop_all()


@pytest.fixture
def balancers(tmp_path, request):
    """`start(nodes, ...)` launches a `switchboard balance` in front of them; all are stopped at teardown."""
    from balancerlib import BalancerFactory
    f = BalancerFactory(tmp_path, request)
    try:
        yield f
    finally:
        f.stop_all()


# Join/leave pushes are off by default (they cost O(subscribers) per join);
# the tests that watch them use the `room:` namespace, which turns them on.
JOIN_LEAVE_YAML = """\
# written by IntegrationTests/e2e/conftest.py
namespaces:
  room:
    joinLeave: true
"""


@pytest.fixture
def node(node_factory) -> Node:
    """A node with default settings (explicit API key, drain 2 s), join/leave on in `room:`."""
    return node_factory.start(node_name="e2e-node", config_text=JOIN_LEAVE_YAML)


from sbclient import TOKEN_SECRET  # noqa: E402


@pytest.fixture
def token_node(node_factory) -> Node:
    return node_factory.start(token_secret=TOKEN_SECRET, node_name="e2e-token-node", config_text=JOIN_LEAVE_YAML)


# --------------------------------------------------------------------------
# Redis broker: a redis-server per test and nodes that share it
# --------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path, request):
    """A fresh, empty `redis-server` on a free loopback port, no persistence.
    The test may `kill()` and `restart()` it (same port); it is stopped at
    teardown whatever happened."""
    if shutil.which(redis_binary()) is None:
        pytest.fail(f"{redis_binary()} not found: scripts/test.sh installs Debian's redis-server "
                    "(apt-get install redis-server), or set REDIS_SERVER_BIN")
    workdir = tmp_path / "redis"
    workdir.mkdir(exist_ok=True)
    try:
        server = start_redis(str(tmp_path / "redis.log"), str(workdir), _ALL_REDIS)
    except RedisStartError as e:
        pytest.fail(str(e))
    try:
        yield server
    finally:
        server.stop()
        _ALL_REDIS.remove(server)
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(f"\n--- redis-server port {server.port} pids {server.pids}; log tail:\n{server.log_tail()}")


def _redis_cluster(tmp_path, request, name: str, replicas: int):
    """A fresh Redis Cluster (3 masters, `replicas` replicas each) for one test; stopped
    by PID at teardown, its nodes' log tails printed when the test failed."""
    for binary in (redis_binary(), redis_cli_binary()):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} not found: scripts/test.sh installs Debian's redis-server "
                        "(apt-get install redis-server, which brings redis-cli)")
    try:
        rc = start_redis_cluster(str(tmp_path / name), masters=3, replicas=replicas, registry=_ALL_REDIS)
    except RedisStartError as e:
        pytest.fail(str(e))
    try:
        yield rc
    finally:
        rc.stop()
        if rc in _ALL_REDIS:
            _ALL_REDIS.remove(rc)
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(f"\n--- redis cluster {rc.url} pids {rc.pids}; log tails:\n{rc.log_tail()}")


@pytest.fixture
def redis_cluster(tmp_path, request):
    """A Redis Cluster of 3 masters, no replicas (`.url` is `redis+cluster://...` with
    every node; see sbrediscluster.RedisCluster)."""
    yield from _redis_cluster(tmp_path, request, "redis-cluster", replicas=0)


@pytest.fixture
def redis_cluster_with_replicas(tmp_path, request):
    """A Redis Cluster of 3 masters with 1 replica each, for failover tests."""
    yield from _redis_cluster(tmp_path, request, "redis-cluster-replicas", replicas=1)


@functools.lru_cache(maxsize=None)
def _serve_help(path: str) -> str:
    try:
        out = subprocess.run([path, "serve", "--help"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"<{e!r}>"
    return (out.stdout + out.stderr).decode("utf-8", "replace")


def require_broker_option() -> None:
    if "--broker" not in _serve_help(binary_path()):
        pytest.fail(f"{binary_path()} serve --help lists no --broker option: "
                    "this build has no Redis broker yet")


class Cluster:
    """Nodes sharing one Redis broker and one API key.

    `start(n, ...)` launches nodes named node0, node1, ... with
    `--broker redis://127.0.0.1:<port> --node-name nodeI`; each Node gets a
    `name` attribute. All are stopped at teardown (SIGTERM to all at once,
    then the node factory's stop by PID)."""

    def __init__(self, node_factory: NodeFactory, redis: RedisServer):
        self.node_factory = node_factory
        self.redis = redis
        self.api_key = "e2e-cluster-" + secrets.token_hex(8)
        self.nodes: list[Node] = []

    def start(self, n: int, *extra: str, token_secret: str | None = None, config_text: str | None = None,
              **kw) -> list[Node]:
        return [self.start_node(*extra, token_secret=token_secret, config_text=config_text, **kw)
                for _ in range(n)]

    def start_node(self, *extra: str, token_secret: str | None = None, config_text: str | None = None,
                   **kw) -> Node:
        name = f"node{len(self.nodes)}"
        node = self.node_factory.start("--broker", self.redis.url, *extra, api_key=self.api_key,
                                       node_name=name, token_secret=token_secret, config_text=config_text,
                                       config_name=f"{name}.yaml", **kw)
        node.name = name
        self.nodes.append(node)
        return node

    def stop_all(self) -> None:
        for n in self.nodes:
            try:
                n.signal(signal.SIGTERM)
            except Exception:
                pass
        for n in self.nodes:
            n.wait_exit(5)  # the node factory kills what is left, by PID


@pytest.fixture
def cluster(redis_server, node_factory):
    """Start nodes with `cluster.start(n)`; Redis is `cluster.redis`."""
    require_broker_option()
    c = Cluster(node_factory, redis_server)
    try:
        yield c
    finally:
        c.stop_all()
