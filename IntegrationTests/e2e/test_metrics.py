"""Prometheus /metrics, and the Grafana dashboard that reads it."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import shutil
import subprocess
import time

import pytest

from sbclient import connect, run

DASHBOARD = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "switchboard.json"


def scrape(node) -> dict[str, float]:
    r = node.http("GET", "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def test_metrics_count_what_happens(node):
    async def main():
        subs = [await connect(node) for _ in range(3)]
        for s in subs:
            await s.subscribe("metrics:x")
        for i in range(5):
            await node.apublish("metrics:x", {"i": i})
        for s in subs:
            await s.wait_pubs("metrics:x", 5)
        # Loops hand over their counts once a second: wait (bounded, without blocking the event loop)
        # until every count is in, then check them all.
        deadline = time.monotonic() + 10
        while True:
            m = await asyncio.to_thread(scrape, node)
            if m.get("switchboard_deliveries_total", 0) >= 15 and m.get("switchboard_publications_total", 0) >= 5 \
                    and m.get("switchboard_broker_publish_seconds_count", 0) >= 5 \
                    and m.get('switchboard_connections{transport="websocket"}', 0) >= 3 \
                    and m.get("switchboard_subscriptions", 0) >= 3:
                break
            assert time.monotonic() < deadline, f"counts not in after 10 s: {m}"
            await asyncio.sleep(0.05)
        assert m['switchboard_connections{transport="websocket"}'] == 3
        assert m["switchboard_subscriptions"] == 3
        assert m["switchboard_channels"] == 1
        assert m["switchboard_publications_total"] == 5
        assert m["switchboard_deliveries_total"] == 15
        assert m["switchboard_sent_bytes_total"] > 15 * 20
        assert m["switchboard_publish_to_deliver_seconds_count"] >= 5
        assert m["switchboard_broker_publish_seconds_count"] == 5
        assert m["switchboard_draining"] == 0
        assert m["switchboard_delivery_backlog_bytes"] == 0  # nothing waits between loops once delivered

    run(main())


def promtool_check(text: str) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; scripts/test.sh installs it)")
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)


def test_promtool_accepts_the_exposition(node):
    async def main():
        # Give the families samples: a session, a subscription, a publication
        # and its delivery (the histograms get buckets).
        s = await connect(node)
        await s.subscribe("promtool:x")
        await node.apublish("promtool:x", {"n": 1})
        await s.wait_pubs("promtool:x", 1)

    run(main())
    text = node.http("GET", "/metrics").text
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                   "process_max_fds", "process_start_time_seconds", "switchboard_build_info"):
        assert f"# HELP {family} " in text, f"{family} missing from /metrics"
    checked = promtool_check(text)
    assert checked.stdout + checked.stderr == "", f"promtool check metrics:\n{checked.stdout}{checked.stderr}"
    assert checked.returncode == 0


def test_promtool_would_catch_a_missing_help():
    # The check above fails when a family loses its HELP line.
    checked = promtool_check("# TYPE switchboard_x_total counter\nswitchboard_x_total 1\n")
    assert "no help text" in checked.stdout + checked.stderr


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_process_and_build_info_are_the_node_s(node_factory):
    started_after = time.time()
    node = node_factory.start(env={"SWITCHBOARD_COMMIT": "4409b3b"})
    started_before = time.time()
    pid = node.pid
    cpu_before = _cpu_seconds(pid)
    m = scrape(node)
    cpu_after = _cpu_seconds(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", pathlib.Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024

    source = (pathlib.Path(__file__).resolve().parents[2] / "Sources" / "SwitchboardCore" / "SwitchboardVersion.swift").read_text()
    version = re.search(r'current = "([^"]+)"', source).group(1)
    assert m[f'switchboard_build_info{{version="{version}",commit="4409b3b"}}'] == 1
    assert cpu_before <= m["process_cpu_seconds_total"] <= cpu_after
    # btime in /proc/stat is whole seconds: allow one either side.
    assert started_after - 1 <= m["process_start_time_seconds"] <= started_before + 1
    # The node may open or close a descriptor (a timer, the scrape's socket) between the reads.
    assert abs(m["process_open_fds"] - fds) <= 2
    assert 0.5 * rss <= m["process_resident_memory_bytes"] <= 2 * rss
    assert m["process_max_fds"] >= fds


def test_build_info_says_unknown_without_a_commit(node):
    assert [k for k in scrape(node) if k.startswith("switchboard_build_info")][0].endswith('commit="unknown"}')


def test_dashboard_uses_only_metrics_the_node_exports(node):
    exported = {re.sub(r"\{.*", "", name) for name in scrape(node)}
    families = set()
    for name in exported:
        families.add(re.sub(r"_(bucket|sum|count)$", "", name))
    families |= exported
    dashboard = json.loads(DASHBOARD.read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"switchboard_[a-z_]+", target["expr"]))
    assert used, "the dashboard queries nothing"
    # The balancer row is checked against a balancer's /metrics (test_balancer_reload.py).
    used = {u for u in used if not u.startswith("switchboard_balancer_")}
    missing = {u for u in used if u not in families and re.sub(r"_(bucket|sum|count)$", "", u) not in families}
    assert not missing, f"dashboard queries metrics the node does not export: {sorted(missing)}"
