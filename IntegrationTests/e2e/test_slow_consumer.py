"""A consumer that stops reading is cut off (3004); everyone else is unaffected."""

from __future__ import annotations

import asyncio
import socket

from sbclient import RawWS, connect, run


def test_slow_consumer_is_disconnected(node_factory):
    node = node_factory.start("--outbound-limit", "65536")
    ch = "firehose"
    payload = "z" * 16000

    async def main():
        # The slow client: raw socket, tiny receive buffer, handshake and
        # subscribe by hand, then it never reads again.
        slow = await asyncio.to_thread(RawWS, node.host, node.port, "/ws", 4096)
        try:
            await asyncio.to_thread(slow.handshake)
            rep = await asyncio.to_thread(slow.call, "subscribe", {"channel": ch})
            assert "result" in rep, rep

            healthy = await connect(node)
            await healthy.subscribe(ch)
            stats = await node.aapi_result("presenceStats", {"channel": ch})
            assert stats["clients"] == 2

            published = 0

            async def publish(n):
                nonlocal published
                for _ in range(n):
                    published += 1
                    r = await node.apublish(ch, {"n": published, "pad": payload})
                    assert r["offset"] == published

            async def slow_gone(timeout):
                for _ in range(int(timeout / 0.1)):
                    s = await node.aapi_result("presenceStats", {"channel": ch})
                    if s["clients"] == 1:
                        return True
                    await asyncio.sleep(0.1)
                return False

            await publish(300)  # ~4.8 MB against a 64 KB outbound limit
            gone = await slow_gone(5)
            # Kernel buffers may absorb part of the stream; keep going (bounded).
            while not gone and published < 1000:
                await publish(100)
                gone = await slow_gone(1)
            assert gone, f"slow consumer still subscribed after {published} x 16 KB publications"

            pubs = await healthy.wait_pubs(ch, published, timeout=30)
            assert [p["offset"] for p in pubs] == list(range(1, published + 1)), "healthy client lost/reordered"
            assert [p["data"]["n"] for p in pubs] == list(range(1, published + 1))
            assert all(p["data"]["pad"] == payload for p in pubs)
            assert not healthy.closed.is_set()

            # The slow socket: whatever was buffered, then the end, never all pubs.
            slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            how, code, frames = await asyncio.to_thread(slow.read_until_close, 15)
            print(f"slow consumer ended by {how} (code {code}) after {frames} frames; {published} published")
            assert how in ("close", "eof", "reset"), how
            if how == "close":
                assert code == 3004, f"slow consumer close code {code}"
            assert frames < published, "the slow client was not cut off: it got every publication"

            # The node is still healthy.
            assert (await asyncio.to_thread(node.http, "GET", "/healthz")).status_code == 200
            fresh = await connect(node)
            await fresh.subscribe("after")
            await healthy.publish("after", "ok")
            assert (await fresh.wait_pub("after"))["data"] == "ok"
            chans = (await node.aapi_result("channels", {}))["channels"]
            assert chans == {ch: {"subscribers": 1}, "after": {"subscribers": 1}}, chans
        finally:
            slow.close()

    run(main(), timeout=120)
