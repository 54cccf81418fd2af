"""A real Redis Cluster for the e2e tests: `redis-server --cluster-enabled yes`
processes on free loopback ports (at most 55000, because each node also
listens on its cluster bus port, port + 10000), each in its own directory,
joined with `redis-cli --cluster create`, every one stopped by its PID.

Every query is one `redis-cli -e` process with a timeout (so the harness
does not depend on the Redis client being tested), and every wait has a
deadline. The same procedure as Sources/TestProcesses/RedisClusterProcess.swift.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

from sbproc import RedisStartError, free_port, redis_binary, resp_ping

MAX_PORT = 55000  # the bus port, port + 10000, must be a valid port too
NODE_TIMEOUT_MS = 1000


class RedisClusterError(RedisStartError):
    """A cluster that does not start or converge, or a redis-cli call that fails."""


def redis_cli_binary() -> str:
    return os.environ.get("REDIS_CLI_BIN", "redis-cli")


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_cluster_port(taken: set[int], attempts: int = 50) -> int:
    """A free port <= MAX_PORT whose bus port (port + 10000) is free too."""
    for _ in range(attempts):
        port = free_port()
        if port <= MAX_PORT and port not in taken and _can_bind(port + 10000):
            return port
    raise RedisClusterError(f"no free port <= {MAX_PORT} with a free bus port after {attempts} tries")


class ClusterNode:
    """One `redis-server` of the cluster, in the foreground, logging to `log_path`."""

    def __init__(self, port: int, workdir: str):
        self.port = port
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "redis.log")
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        # --repl-diskless-sync-delay 0: a replica syncs at once instead of after the default 5 s.
        args = [redis_binary(), "--port", str(self.port), "--dir", self.workdir,
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "", "--appendonly", "no",
                "--bind", "127.0.0.1", "--daemonize", "no", "--loglevel", "warning",
                "--enable-debug-command", "local", "--repl-diskless-sync-delay", "0", "--logfile", ""]
        with open(self.log_path, "ab") as log:
            log.write(f"--- start: {' '.join(args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisClusterError(f"redis-server exited with {self.process.returncode} on port "
                                        f"{self.port}:\n{self.log_tail()}")
            if resp_ping(self.port, 0.5):
                time.sleep(0.05)  # still ours? (another process may hold the port)
                if self.process.poll() is None:
                    return
            time.sleep(0.02)
        self.stop()
        raise RedisClusterError(f"redis-server on port {self.port} did not answer PING within {timeout}s")

    def kill(self, timeout: float = 5.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""


class RedisCluster:
    """The nodes of one cluster. `ports` lists every node started (killed
    ones too), in the order given to `redis-cli --cluster create`; `url` is
    `redis+cluster://127.0.0.1:p1,...` with every node as a seed."""

    def __init__(self, workdir: str, masters: int = 3, replicas: int = 0):
        if masters < 3 or replicas < 0:
            raise RedisClusterError(f"a Redis Cluster needs at least 3 masters (asked {masters}, {replicas} replicas)")
        self.workdir = workdir
        self.masters = masters
        self.replicas = replicas
        self.nodes: dict[int, ClusterNode] = {}
        self.node_ids: dict[int, str] = {}
        self.killed_slots: dict[int, list[tuple[int, int]]] = {}
        self.create_output = ""
        self.startup_seconds: float | None = None

    # -- properties ---------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return list(self.nodes)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes.values() if n.pid is not None]

    def live_ports(self, excluding: int | None = None) -> list[int]:
        return [p for p, n in self.nodes.items() if p != excluding and n.alive()]

    # -- lifecycle ----------------------------------------------------------

    def start(self, ready_timeout: float = 20.0) -> None:
        t0 = time.monotonic()
        os.makedirs(self.workdir, exist_ok=True)
        for _ in range(self.masters * (1 + self.replicas)):
            self._start_node()
        args = [redis_cli_binary(), "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        try:
            out = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        except subprocess.TimeoutExpired as e:
            raise RedisClusterError(f"redis-cli --cluster create did not finish within 30 s:\n"
                                    f"{(e.stdout or b'').decode('utf-8', 'replace')}") from None
        self.create_output = (out.stdout + out.stderr).decode("utf-8", "replace")
        if out.returncode != 0 or "All 16384 slots covered" not in self.create_output:
            raise RedisClusterError(f"redis-cli --cluster create failed (exit {out.returncode}):\n{self.create_output}")
        last_nudge = 0.0

        def ready(view: list[dict]) -> str | None:
            nonlocal last_nudge
            owners = {r["master"] for r in view}
            if len(owners) != self.masters:
                return f"{len(owners)} masters serve slots, not {self.masters}"
            lacking = sorted({r["master"] for r in view if len(r["replicas"]) < self.replicas})
            if lacking:
                # CLUSTER SLOTS lists a replica only once its replication offset is not 0, which takes
                # a write on its master: FLUSHALL is one, harmless on the new, empty cluster.
                if time.monotonic() - last_nudge > 0.5:
                    last_nudge = time.monotonic()
                    for p in lacking:
                        try:
                            self.cli(p, "FLUSHALL")
                        except RedisClusterError:
                            pass
                return f"masters {lacking} list fewer than {self.replicas} replicas"
            return None

        self._wait_for_agreement("the new cluster to be ready", ready_timeout, ready)
        self.startup_seconds = time.monotonic() - t0

    def _start_node(self, attempts: int = 5) -> None:
        errors = []
        for _ in range(attempts):
            port = _free_cluster_port(set(self.nodes))
            node = ClusterNode(port, os.path.join(self.workdir, str(port)))
            self.nodes[port] = node  # from its first start on, so that stop() finds it
            try:
                node.start()
                return
            except RedisClusterError as e:
                errors.append(str(e))
                node.stop()
                del self.nodes[port]
        raise RedisClusterError("could not start a cluster node:\n" + "\n".join(errors[-2:]))

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would; the slots it served are kept for wait_for_failover."""
        try:
            self.killed_slots[port] = [r["slots"] for r in self.slots(excluding=port) if r["master"] == port]
        except RedisClusterError:
            pass
        self.nodes[port].kill()

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM to every node, SIGKILL to those still running after `timeout`. Safe to call twice."""
        live = [n for n in self.nodes.values() if n.alive()]
        for n in live:
            n.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for n in live:
            try:
                n.process.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.process.kill()
                n.process.wait(5)

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(f"--- node 127.0.0.1:{p} pid {node.pid} alive={node.alive()}:\n{node.log_tail(n)}"
                         for p, node in self.nodes.items())

    # -- queries ------------------------------------------------------------

    def cli(self, port: int, *args: str, json_output: bool = False, timeout: float = 5.0) -> str:
        """`redis-cli -e -h 127.0.0.1 -p PORT args...`: its output, stripped. An error reply
        (or no answer within `timeout`) raises RedisClusterError."""
        cmd = [redis_cli_binary(), "-e"] + (["-2", "--json"] if json_output else [])
        cmd += ["-h", "127.0.0.1", "-p", str(port), *[str(a) for a in args]]
        try:
            out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RedisClusterError(f"redis-cli -p {port} {' '.join(map(str, args))}: no answer within {timeout}s") from None
        text = out.stdout.decode("utf-8", "replace").strip()
        if out.returncode != 0:
            err = (out.stderr.decode("utf-8", "replace") + text).strip()
            raise RedisClusterError(f"redis-cli -p {port} {' '.join(map(str, args))}: {err} (exit {out.returncode})")
        return text

    def node_id(self, port: int) -> str:
        if port not in self.node_ids:
            self.node_ids[port] = self.cli(port, "CLUSTER", "MYID")
        return self.node_ids[port]

    def slots(self, port: int | None = None, excluding: int | None = None) -> list[dict]:
        """CLUSTER SLOTS of `port` (default: the first live node that answers), sorted:
        [{"slots": (first, last), "master": port, "replicas": [port, ...]}]."""
        if port is None:
            error: Exception = RedisClusterError("no cluster node is running")
            for p in self.live_ports(excluding):
                try:
                    return self.slots(p)
                except (RedisClusterError, ValueError) as e:
                    error = e
            raise error
        out = []
        for entry in json.loads(self.cli(port, "CLUSTER", "SLOTS", json_output=True)):
            nodes = [n[1] for n in entry[2:]]  # [ip, port, id, metadata]: master first, then replicas
            out.append({"slots": (entry[0], entry[1]), "master": nodes[0], "replicas": nodes[1:]})
        return sorted(out, key=lambda r: r["slots"])

    def master_ports(self) -> list[int]:
        """The masters serving slots now (sorted), from a live node's CLUSTER SLOTS."""
        return sorted({r["master"] for r in self.slots()})

    def keyslot(self, key: str) -> int:
        live = self.live_ports()
        if not live:
            raise RedisClusterError("no cluster node is running")
        return int(self.cli(live[0], "CLUSTER", "KEYSLOT", key))

    def master_for_slot(self, slot: int, view: list[dict] | None = None) -> int:
        """The port of the master serving `slot` (in `view`, a `slots()` result, when given)."""
        for r in (view if view is not None else self.slots()):
            if r["slots"][0] <= slot <= r["slots"][1]:
                return r["master"]
        raise RedisClusterError(f"no master serves slot {slot}")

    # -- waits --------------------------------------------------------------

    def _wait_for_agreement(self, what: str, timeout: float, accept, excluding: int | None = None) -> list[dict]:
        """Until every live node (but `excluding`) answers cluster_state:ok with all 16384
        slots served, all list the same slot owners, and `accept(view)` returns None for
        each node's view (else a reason). Bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        problem = "no live node"
        while True:
            try:
                agreed = None
                for p in self.live_ports(excluding):
                    info = self.cli(p, "CLUSTER", "INFO")
                    if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                        raise RedisClusterError(f"127.0.0.1:{p} CLUSTER INFO: {', '.join(info.splitlines()[:3])}")
                    view = self.slots(p)
                    reason = accept(view)
                    if reason is not None:
                        raise RedisClusterError(f"127.0.0.1:{p}: {reason}")
                    owners = [(r["slots"], r["master"]) for r in view]
                    if agreed is not None and owners != agreed:
                        raise RedisClusterError(f"127.0.0.1:{p} lists slot owners {owners}, another node {agreed}")
                    agreed = owners
                if agreed is not None:
                    return view
            except (RedisClusterError, ValueError, IndexError, TypeError) as e:
                problem = str(e)
            if time.monotonic() >= deadline:
                raise RedisClusterError(f"timed out after {timeout}s waiting for {what}; last: {problem}\n"
                                        f"{self.log_tail(5)}")
            time.sleep(0.1)

    def wait_for_failover(self, port: int, timeout: float = 20.0) -> int:
        """After `kill(port)` of a master: until a replica serves its slots and every live
        node answers cluster_state:ok and agrees; returns the promoted replica's port.
        (Right after a kill the others still say ok for about the node timeout: the state
        alone does not show the failover.)"""
        owned = self.killed_slots.get(port) or [r["slots"] for r in self.slots(excluding=port) if r["master"] == port]
        if not owned:
            raise RedisClusterError(f"127.0.0.1:{port} served no slots")
        slot = owned[0][0]
        promoted: list[int] = []

        def taken_over(view: list[dict]) -> str | None:
            if any(r["master"] == port for r in view):
                return f"127.0.0.1:{port} still serves slots"
            owner = self.master_for_slot(slot, view)
            if owner not in self.live_ports():
                return f"slot {slot} is served by {owner}, not a live node"
            promoted[:] = [owner]
            return None

        self._wait_for_agreement(f"a replica of 127.0.0.1:{port} to take over", timeout, taken_over, excluding=port)
        return promoted[0]

    # -- slot migration (MOVED / ASK) ----------------------------------------

    def begin_migration(self, slot: int, source: int, target: int) -> None:
        """IMPORTING on the target, MIGRATING on the source (keys answer ASK once moved)."""
        self.cli(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        self.cli(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target))

    def migrate_key(self, key: str, source: int, target: int) -> None:
        reply = self.cli(source, "MIGRATE", "127.0.0.1", target, key, 0, 5000)
        if reply not in ("OK", "NOKEY"):
            raise RedisClusterError(f"MIGRATE {key} to {target}: {reply}")

    def _move_keys(self, slot: int, source: int, target: int) -> None:
        for _ in range(1000):
            keys = [k for k in self.cli(source, "CLUSTER", "GETKEYSINSLOT", slot, 100).split("\n") if k]
            if not keys:
                return
            reply = self.cli(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
            if reply not in ("OK", "NOKEY"):
                raise RedisClusterError(f"MIGRATE slot {slot} to {target}: {reply}")
        raise RedisClusterError(f"slot {slot} still has keys on {source} after 1000 batches")

    def finish_migration(self, slot: int, target: int) -> None:
        """Moves the keys left on the current owner, then SETSLOT NODE on the target, the
        source and every other master; returns once every live node names the target."""
        source = self.master_for_slot(slot)
        if source != target:
            self._move_keys(slot, source, target)
        order = [target] + [p for p in dict.fromkeys([source] + self.master_ports())
                            if p != target and p in self.live_ports()]
        for p in order:
            self.cli(p, "CLUSTER", "SETSLOT", slot, "NODE", self.node_id(target))
        self._wait_for_agreement(
            f"slot {slot} to move to {target}", 10,
            lambda view: None if self.master_for_slot(slot, view) == target else f"slot {slot} not yet on {target}")

    def migrate_slot(self, slot: int, source: int, target: int) -> None:
        """The whole documented procedure: IMPORTING/MIGRATING, MIGRATE ... KEYS in batches, SETSLOT NODE."""
        self.begin_migration(slot, source, target)
        self.finish_migration(slot, target)


def start_redis_cluster(workdir: str, masters: int = 3, replicas: int = 0, registry: list | None = None,
                        ready_timeout: float = 20.0) -> RedisCluster:
    """Starts and creates a cluster of `masters` masters with `replicas` replicas each
    (`workdir`: one directory per node, made if missing). It is put in `registry` (the
    caller's safety net, e.g. conftest's _ALL_REDIS, whose entries get `stop(timeout=2)`)
    before its first process starts; on failure it is stopped, taken out and
    RedisClusterError is raised."""
    cluster = RedisCluster(workdir, masters, replicas)
    if registry is not None:
        registry.append(cluster)
    try:
        cluster.start(ready_timeout)
    except BaseException:
        cluster.stop()
        if registry is not None and cluster in registry:
            registry.remove(cluster)
        raise
    return cluster
