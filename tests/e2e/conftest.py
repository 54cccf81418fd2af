"""Fixtures: start real `switchboard serve` nodes on loopback, always stop them."""

from __future__ import annotations

import atexit
import os
import secrets

import pytest

from sbclient import Node, binary_path

_ALL_NODES: list[Node] = []


def _stop_all() -> None:
    for n in list(_ALL_NODES):
        try:
            n.stop(timeout=2)
        except Exception:
            pass


# Safety net for an interrupted run: no node outlives the test process.
atexit.register(_stop_all)


def pytest_sessionstart(session: pytest.Session) -> None:
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
              log_level: str = "info", env: dict[str, str] | None = None) -> Node:
        api_key = api_key or "e2e-" + secrets.token_hex(8)
        args = [binary_path(), "serve", "--host", "127.0.0.1", "--port", "0",
                "--api-key", api_key, "--log-level", log_level]
        if ping_interval is not None:
            args += ["--ping-interval", _num(ping_interval)]
        if pong_timeout is not None:
            args += ["--pong-timeout", _num(pong_timeout)]
        if token_secret is not None:
            args += ["--token-secret", token_secret]
        if drain_seconds is not None:
            args += ["--drain-seconds", _num(drain_seconds)]
        if node_name is not None:
            args += ["--node-name", node_name]
        if config_text is not None:
            args += ["--config", self.write_config(config_text, config_name)]
        args += list(extra)
        log_path = str(self.tmp_path / f"node{len(self.nodes)}.log")
        node = Node(args, api_key=api_key, log_path=log_path, env=env)
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
def node(node_factory) -> Node:
    """A node with default settings (explicit API key, drain 2 s)."""
    return node_factory.start(node_name="e2e-node")


from sbclient import TOKEN_SECRET  # noqa: E402


@pytest.fixture
def token_node(node_factory) -> Node:
    return node_factory.start(token_secret=TOKEN_SECRET, node_name="e2e-token-node")
