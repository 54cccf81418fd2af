"""Size, name and subscription limits; a healthy client keeps being served."""

from __future__ import annotations

import asyncio

from sbclient import SteadyTraffic, connect, open_client, run


def test_message_over_64k_closes_1009(node):
    async def main():
        async with SteadyTraffic(node) as steady:
            c = await connect(node)
            await c.subscribe("big")
            # Just under the limit is fine (frame = whole JSON text).
            ok = await c.publish("big", "y" * 60000)
            assert ok["offset"] == 1
            assert len((await c.wait_pub("big"))["data"]) == 60000
            await steady.check()

            bad = await connect(node)
            await bad.send_raw('{"id":2,"publish":{"channel":"big","data":"' + "x" * 70000 + '"}}')
            assert await bad.wait_closed() == 1009
            await steady.check()
            # The oversized publication went nowhere.
            await node.apublish("big", "after")
            assert (await c.wait_pub("big"))["data"] == "after"
            assert len(c.pubs("big")) == 2

    run(main())


def test_channel_name_limits_107(node):
    async def main():
        async with SteadyTraffic(node) as steady:
            c = await connect(node)
            ok = "a" * 255
            await c.subscribe(ok)
            await c.publish(ok, 1)
            assert (await c.wait_pub(ok))["data"] == 1
            # 255 bytes in UTF-8 (multi-byte characters count as bytes).
            await c.subscribe("é" * 127 + "a")
            bad_names = ["a" * 256, "é" * 128, "", "bad\nname", "tab\tname", "nul\u0000name", "del\u007f"]
            for name in bad_names:
                err = await c.error("subscribe", {"channel": name})
                assert err["code"] == 107, f"subscribe {name[:20]!r} (len {len(name.encode())}): {err}"
                err = await c.error("publish", {"channel": name, "data": 1})
                assert err["code"] == 107, f"publish {name[:20]!r}: {err}"
                await steady.check()
            assert (await node.aapi_error("publish", {"channel": "a" * 256, "data": 1}))["code"] == 107
            assert await c.result("ping", {}) == {}

    run(main())


def test_subscription_limits(node):
    async def main():
        async with SteadyTraffic(node) as steady:
            c = await connect(node)
            await c.subscribe("dup")
            err = await c.error("subscribe", {"channel": "dup"})
            assert err["code"] == 105
            await steady.check()
            for i in range(127):  # 128 in all with "dup"
                await c.subscribe(f"many:{i}")
            err = await c.error("subscribe", {"channel": "many:overflow"})
            assert err["code"] == 106
            await steady.check()
            # Unsubscribing frees a slot.
            await c.result("unsubscribe", {"channel": "many:0"})
            await c.subscribe("many:overflow")
            assert (await c.error("subscribe", {"channel": "many:overflow2"}))["code"] == 106
            # Every one of the 128 subscriptions delivers.
            await node.aapi_result("broadcast", {"channels": ["dup", "many:126", "many:overflow"], "data": "b"})
            for ch in ("dup", "many:126", "many:overflow"):
                assert (await c.wait_pub(ch))["data"] == "b"

    run(main())


def test_bad_inputs_in_a_row_keep_node_healthy(node):
    """Garbage from several clients at once while a steady stream flows."""

    async def main():
        async with SteadyTraffic(node) as steady:
            async def abuser(i):
                c = await open_client(node)
                await c.send_raw("}{" * (i + 1))
                return await c.wait_closed()

            codes = await asyncio.gather(*(abuser(i) for i in range(10)))
            assert codes == [3501] * 10
            await steady.check()
            c = await connect(node)
            for i in range(20):
                assert (await c.error("nope", {}))["code"] == 104
            await steady.check()

    run(main())
