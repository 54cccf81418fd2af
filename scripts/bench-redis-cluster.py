#!/usr/bin/env python3
"""One node on a single `redis-server` against the same node on a three-master Redis Cluster, in one run:

    python3 scripts/bench-redis-cluster.py [--binary .build-release/release/switchboard]
        [--bench .build-release/release/switchboard-bench] [--loops 500] [--seconds 10] [--rounds 2]

Each round runs `switchboard-bench pingpong` (N closed loops: publish, receive it back; history on, the
default) against a fresh node on the single server, then against a fresh node on the cluster. Round trips/s
come from the bench; CPU is read from /proc for the node and for every redis-server process (user + system,
10 ms ticks) over the bench's run. Prints one line per run and the cluster's ratios to the single server of
the same round (this machine is shared: compare ratios, not absolute figures).

Needs redis-server and redis-cli (Redis 7); the cluster is started as the end-to-end tests start it
(IntegrationTests/e2e/sbrediscluster.py). Loopback only; every process started is stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "IntegrationTests", "e2e"))
from sbrediscluster import start_redis_cluster  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout} s")


def run_node(args, broker: str, redis_pids: list[int], label: str, workdir: str) -> dict:
    port = free_port()
    node = subprocess.Popen(
        [args.binary, "serve", "--port", str(port), "--broker", broker, "--log-level", "error", "--api-key", "bench",
         "--commands-per-second", "1000000", "--command-burst", "1000000", "--max-connections-per-ip", "1000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(1)
        report = os.path.join(workdir, f"{label}.json")
        redis_before = sum(cpu_seconds(p) for p in redis_pids)
        node_before = cpu_seconds(node.pid)
        subprocess.run([args.bench, "pingpong", "-n", str(args.loops), "--duration", str(args.seconds),
                        "--url", f"ws://127.0.0.1:{port}/ws", "--json", report],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=args.seconds + 120, check=True)
        redis_cpu = sum(cpu_seconds(p) for p in redis_pids) - redis_before
        node_cpu = cpu_seconds(node.pid) - node_before
        pingpong = json.load(open(report))["pingpong"]
        trips = max(pingpong["round_trips"], 1)
        return {
            "run": label, "round_trips_per_s": round(pingpong["round_trips_per_s"]), "lost": pingpong["lost"],
            "duplicates": pingpong["duplicates"], "node_us_per_round_trip": round(node_cpu / trips * 1e6, 1),
            "redis_us_per_round_trip": round(redis_cpu / trips * 1e6, 1),
        }
    finally:
        node.terminate()
        node.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build-release/release/switchboard"))
    parser.add_argument("--bench", default=os.path.join(ROOT, ".build-release/release/switchboard-bench"))
    parser.add_argument("--loops", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    args.seconds = max(1, min(args.seconds, 120))
    args.rounds = max(1, min(args.rounds, 10))
    workdir = tempfile.mkdtemp(prefix="sb-bench-cluster-")
    port = free_port()
    single = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", workdir], stdout=subprocess.DEVNULL)
    cluster = None
    try:
        wait_port(port)
        cluster = start_redis_cluster(os.path.join(workdir, "cluster"), masters=3)
        for round_ in range(1, args.rounds + 1):
            one = run_node(args, f"redis://127.0.0.1:{port}", [single.pid], f"single-{round_}", workdir)
            many = run_node(args, cluster.url, list(cluster.pids), f"cluster-{round_}", workdir)
            print(json.dumps(one))
            print(json.dumps(many))
            print(json.dumps({
                "round": round_,
                "cluster_over_single_round_trips": round(many["round_trips_per_s"] / max(one["round_trips_per_s"], 1), 2),
                "cluster_over_single_redis_cpu": round(many["redis_us_per_round_trip"] / max(one["redis_us_per_round_trip"], 0.1), 2),
                "cluster_over_single_node_cpu": round(many["node_us_per_round_trip"] / max(one["node_us_per_round_trip"], 0.1), 2),
            }), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
        single.terminate()
        single.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
