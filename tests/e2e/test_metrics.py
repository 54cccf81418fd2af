"""Prometheus /metrics, and the Grafana dashboard that reads it."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import time

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

    run(main())


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
    missing = {u for u in used if u not in families and re.sub(r"_(bucket|sum|count)$", "", u) not in families}
    assert not missing, f"dashboard queries metrics the node does not export: {sorted(missing)}"
