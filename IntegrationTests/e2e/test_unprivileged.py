"""The node and the balancer run by an ordinary user, as they are in production.

Everything else here runs as root, which hid a bug for as long as it lived: the socket option
meant as TCP_NODELAY was set at the socket level (`SOL_SOCKET`, option 1), which is SO_DEBUG, and
only a process with CAP_NET_ADMIN may set that. Run by any other user, the node refused every
connection (HTTP and WebSocket alike), the balancer every tunnel, and the Redis client its
connection. These tests start the processes as `nobody` and use them as a client would.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid

import pytest
import requests

from sbclient import binary_path, connect, run

UNPRIVILEGED = "nobody"


def _require_root_and_nobody() -> None:
    if os.geteuid() != 0:
        pytest.skip("the suite already runs unprivileged: every other test covers this")
    try:
        pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        pytest.skip(f"no {UNPRIVILEGED!r} account to run the server as")


@pytest.fixture(autouse=True)
def binary_for_anyone(monkeypatch):
    """A copy of the binary that `nobody` may run: the checkout (or pytest's temporary
    directory) may sit under a directory only root can enter."""
    directory = tempfile.mkdtemp(prefix="switchboard-unprivileged-")
    try:
        os.chmod(directory, 0o755)
        copy = os.path.join(directory, "switchboard")
        shutil.copy2(binary_path(), copy)
        os.chmod(copy, 0o755)
        monkeypatch.setenv("SWITCHBOARD_BIN", copy)
        yield copy
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _is_unprivileged(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    return all(uid == str(pwd.getpwnam(UNPRIVILEGED).pw_uid) for uid in uids)


async def _publish_and_receive(node, channel: str) -> None:
    client = await connect(node)
    await client.subscribe(channel)
    await client.publish(channel, {"n": 1})
    pub = await client.wait_pub(channel)
    assert pub["data"] == {"n": 1}
    await client.close()


def test_a_node_run_by_an_unprivileged_user_serves_http_websocket_and_redis(node_factory, redis_server):
    _require_root_and_nobody()
    node = node_factory.start("--broker", redis_server.url, user=UNPRIVILEGED)
    assert _is_unprivileged(node.pid)
    with requests.Session() as s:
        s.trust_env = False
        assert s.get(node.http_url + "/healthz", timeout=5).status_code == 200
        assert s.get(node.http_url + "/readyz", timeout=5).status_code == 200
    # Through Redis: the publication makes the round trip node -> Redis -> node.
    run(_publish_and_receive(node, "unprivileged-" + uuid.uuid4().hex[:8]))


def test_a_balancer_run_by_an_unprivileged_user_tunnels_to_its_node(node_factory, balancers):
    _require_root_and_nobody()
    node = node_factory.start(user=UNPRIVILEGED)
    balancer = balancers.start([node], user=UNPRIVILEGED)
    assert _is_unprivileged(balancer.pid)
    run(_publish_and_receive(balancer, "unprivileged-" + uuid.uuid4().hex[:8]))
