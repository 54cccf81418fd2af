"""The node's default number of event loops: one per core it may run on, its affinity mask included.

NIO's own core count follows cgroup quotas and cpusets but not `taskset`: a node pinned to one
core used to start one loop per core of the machine on it, and every hop between loops waited
for the other loop's time slice. Checked by counting the node's `NIO-ELT-*` threads.
"""

from __future__ import annotations

import os

from sbclient import run, connect


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
