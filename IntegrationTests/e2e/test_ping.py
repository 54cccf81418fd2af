"""Server pings (the JSON `{}` text message) and the pong timeout."""

from __future__ import annotations

import asyncio
import time

from sbclient import connect, run


def test_server_ping_and_pong_timeout(node_factory):
    node = node_factory.start(ping_interval=1, pong_timeout=1)

    async def main():
        good = await connect(node, auto_pong=True)
        silent = await connect(node, auto_pong=False)
        t0 = time.monotonic()
        for c in (good, silent):
            assert c.info["ping"] == 1
            assert c.info["pong"] is True

        # The silent client gets a ping, then (no pong) a close 3006.
        await silent.wait_until(lambda: len(silent.ping_times) >= 1, 3, "a server ping {}")
        # Bounds generous for a loaded machine: interval 1 s, pong timeout 1 s.
        assert silent.ping_times[0] - t0 < 4.0, "first ping within about one interval"
        code = await silent.wait_closed(timeout=5)
        assert code == 3006, f"no pong -> close 3006, got {code}"
        assert silent.closed_at - silent.ping_times[0] < 4.0, "closed about pongTimeout after the ping"

        # The answering client stays, keeps getting pings, keeps working.
        await good.wait_until(lambda: len(good.ping_times) >= 3 or good.closed.is_set(), 15,
                              "three pings to the answering client")
        assert not good.closed.is_set(), f"answering client was closed with {good.close_code}"
        assert len(good.ping_times) >= 3, f"pings every ~1 s of silence, got {len(good.ping_times)}"
        assert await good.result("ping", {}) == {}

    run(main())


def test_no_ping_while_traffic_flows(node_factory):
    """Pings come after outbound silence; a client receiving pubs faster
    than the interval needs none and is not closed even without pongs."""
    node = node_factory.start(ping_interval=1, pong_timeout=1)

    async def main():
        c = await connect(node, auto_pong=False)
        await c.subscribe("busy")
        pub = await connect(node)
        t_end = time.monotonic() + 3.5
        n = 0
        while time.monotonic() < t_end and n < 200:
            n += 1
            await pub.publish("busy", n)
            await asyncio.sleep(0.1)
        await c.wait_pubs("busy", n)
        assert not c.closed.is_set(), f"closed with {c.close_code} despite steady outbound traffic"
        assert c.ping_times == [], "no ping when outbound was never silent for 1 s"

    run(main())
