"""The node's default number of event loops: one per core it may run on, its affinity mask included.

NIO's own core count follows cgroup quotas and cpusets but not `taskset`: a node pinned to one
core used to start one loop per core of the machine on it, and every hop between loops waited
for the other loop's time slice. Checked by counting the node's `NIO-ELT-*` threads.
"""

from __future__ import annotations

import os
import subprocess

from sbclient import run, connect
from sbproc import binary_path


def _event_loop_threads(pid: int) -> int:
    count = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                if f.read().startswith("NIO-ELT-"):
                    count += 1
        except FileNotFoundError:
            pass
    return count


def _listening_sockets(port: int) -> int:
    """Sockets in LISTEN state on `port`, from /proc/net/tcp and tcp6 (every process's)."""
    count = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(path):
            continue
        with open(path) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def _start_with_affinity(node_factory, cpus: set[int]):
    """Starts a node that inherits `cpus` as its affinity mask (as `taskset -c` would give it)."""
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        return node_factory.start()
    finally:
        os.sched_setaffinity(0, mine)


def test_a_node_pinned_to_one_cpu_runs_one_event_loop(node_factory):
    allowed = sorted(os.sched_getaffinity(0))
    pinned = _start_with_affinity(node_factory, {allowed[0]})
    assert _event_loop_threads(pinned.pid) == 1
    unpinned = node_factory.start()
    # Without a pin: one loop per usable core (no cgroup quota here: /sys/fs/cgroup/cpu.max absent or "max").
    quota = open("/sys/fs/cgroup/cpu.max").read().split()[0] if os.path.exists("/sys/fs/cgroup/cpu.max") else "max"
    if quota == "max":
        assert _event_loop_threads(unpinned.pid) == len(allowed)

    async def main():
        # The pinned node works: a client connects, subscribes and gets a publication.
        c = await connect(pinned)
        await c.subscribe("loops:one")
        pinned.api_result("publish", {"channel": "loops:one", "data": {"n": 1}})
        pub = await c.wait_pub("loops:one")
        assert pub["data"] == {"n": 1}

    run(main(), timeout=30)


def test_every_loop_listens_on_the_port_and_a_second_process_cannot_join_it(node_factory, balancers):
    """The node and the balancer listen with one socket per event loop on one port (SO_REUSEPORT), so
    each connection is served by the loop that accepted it. The kernel would let a second process of
    the same user join such a port and take a share of the connections: both commands refuse to start
    on a port already listened on, as any server would."""
    node = node_factory.start()
    loops = _event_loop_threads(node.pid)
    assert loops >= 1 and _listening_sockets(node.port) == loops

    async def main():
        # Connections work whichever listener took them (source ports differ, so do the listeners).
        clients = [await connect(node) for _ in range(8)]
        for i, c in enumerate(clients):
            await c.subscribe(f"listeners:{i}")
            node.api_result("publish", {"channel": f"listeners:{i}", "data": i})
            assert (await c.wait_pub(f"listeners:{i}"))["data"] == i
            await c.close()

    run(main(), timeout=30)
    bal = balancers.start([node])
    assert _listening_sockets(bal.port) == _event_loop_threads(bal.pid)
    for args, option in (
        (["serve", "--host", "127.0.0.1", "--port", str(node.port)], "--port"),
        (["balance", "--listen", f"127.0.0.1:{bal.port}", "--node", f"127.0.0.1:{node.port}"], "--listen"),
    ):
        port = node.port if option == "--port" else bal.port
        before = _listening_sockets(port)
        second = subprocess.run([binary_path(), *args], capture_output=True, text=True, timeout=30)
        assert second.returncode != 0, second.stdout
        assert f"{option}: cannot listen on 127.0.0.1:{port}: Address already in use" in second.stderr, second.stderr
        assert _listening_sockets(port) == before
    assert node.alive() and bal.alive()
