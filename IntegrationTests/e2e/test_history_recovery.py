"""History (WS and HTTP API) and recovery on subscribe / connect."""

from __future__ import annotations

import asyncio

from sbclient import connect, run


async def _publish_n(client, channel, start, count):
    offsets = []
    for i in range(start, start + count):
        offsets.append((await client.publish(channel, {"n": i}))["offset"])
    return offsets


def _offsets(pubs):
    return [p["offset"] for p in pubs]


def test_history_ws_and_api(node):
    async def main():
        c = await connect(node)
        sub = await c.subscribe("hist")
        epoch = sub["epoch"]
        assert await _publish_n(c, "hist", 1, 10) == list(range(1, 11))

        async def ws_hist(**p):
            return await c.result("history", {"channel": "hist", **p})

        async def api_hist(**p):
            return await node.aapi_result("history", {"channel": "hist", **p})

        for hist in (ws_hist, api_hist):
            h = await hist()
            assert h["offset"] == 10 and h["epoch"] == epoch, h
            assert _offsets(h["publications"]) == list(range(1, 11)), "no params -> all, oldest first"
            assert [p["data"] for p in h["publications"]] == [{"n": i} for i in range(1, 11)]
            assert all(p["info"]["client"] == c.id for p in h["publications"])

            h = await hist(limit=3)
            assert _offsets(h["publications"]) == [1, 2, 3], "limit -> the oldest N"
            assert h["offset"] == 10 and h["epoch"] == epoch

            h = await hist(reverse=True)
            assert _offsets(h["publications"]) == list(range(10, 0, -1)), "reverse -> newest first"

            h = await hist(reverse=True, limit=3)
            assert _offsets(h["publications"]) == [10, 9, 8]

            h = await hist(since={"offset": 4, "epoch": epoch})
            assert _offsets(h["publications"]) == [5, 6, 7, 8, 9, 10], "since -> strictly after"

            h = await hist(since={"offset": 4, "epoch": epoch}, limit=2)
            assert _offsets(h["publications"]) == [5, 6]

            h = await hist(since={"offset": 10, "epoch": epoch})
            assert h["publications"] == [] and h["offset"] == 10

    run(main())


def test_history_of_unused_channel_is_empty(node):
    async def main():
        h = await node.aapi_result("history", {"channel": "nothing-here"})
        assert h["publications"] == []
        assert h["offset"] == 0

    run(main())


def test_history_trimmed_to_100_by_default(node):
    async def main():
        c = await connect(node)
        await c.subscribe("trim")
        offsets = await _publish_n(c, "trim", 1, 150)
        assert offsets == list(range(1, 151))
        for h in (await c.result("history", {"channel": "trim"}),
                  await node.aapi_result("history", {"channel": "trim"})):
            assert h["offset"] == 150
            assert _offsets(h["publications"]) == list(range(51, 151))
            assert [p["data"]["n"] for p in h["publications"]] == list(range(51, 151))

    run(main())


def test_recovery_after_reconnect(node):
    async def main():
        ch = "rec:basic"
        a = await connect(node)
        sub = await a.subscribe(ch)
        for i in range(3):
            await node.apublish(ch, {"n": i + 1})
        pubs = await a.wait_pubs(ch, 3)
        last = pubs[-1]["offset"]
        assert last == 3
        epoch = sub["epoch"]
        await a.close()

        for i in range(3, 8):
            await node.apublish(ch, {"n": i + 1})

        b = await connect(node)
        res = await b.subscribe(ch, since={"offset": last, "epoch": epoch})
        assert res["recovered"] is True, res
        assert res["epoch"] == epoch
        assert res["offset"] == 8
        assert _offsets(res["publications"]) == [4, 5, 6, 7, 8]
        assert [p["data"] for p in res["publications"]] == [{"n": i} for i in range(4, 9)]

        for i in range(8, 10):
            await node.apublish(ch, {"n": i + 1})
        await node.apublish(ch, "sentinel")
        live = await b.wait_sentinel(ch)
        assert _offsets(live) == [9, 10], "live continues at the next offset, no duplicate at the seam"

    run(main())


def test_recovery_with_nothing_missed(node):
    async def main():
        ch = "rec:none"
        a = await connect(node)
        sub = await a.subscribe(ch)
        await node.apublish(ch, 1)
        await a.wait_pubs(ch, 1)
        await a.close()
        b = await connect(node)
        res = await b.subscribe(ch, since={"offset": 1, "epoch": sub["epoch"]})
        assert res["recovered"] is True and res["publications"] == [] and res["offset"] == 1

    run(main())


def test_recovery_seam_under_concurrent_publishing(node):
    """Publications keep coming while the client re-subscribes with `since`:
    recovered + live must be exactly contiguous, no gap, no duplicate."""

    async def main():
        ch = "rec:seam"
        a = await connect(node)
        sub = await a.subscribe(ch)
        for i in range(1, 6):
            await node.apublish(ch, {"n": i})
        await a.wait_pubs(ch, 5)
        position = {"offset": 5, "epoch": sub["epoch"]}
        await a.close()

        publisher = await connect(node)
        total = 400
        published: list[int] = []
        started = asyncio.Event()

        async def background():
            for i in range(6, total + 1):
                r = await publisher.publish(ch, {"n": i})
                published.append(r["offset"])
                if len(published) == 30:
                    started.set()
                if i % 10 == 0:
                    await asyncio.sleep(0.005)  # let the subscriber interleave
            started.set()

        task = asyncio.create_task(background())
        await asyncio.wait_for(started.wait(), 10)
        b = await connect(node)
        res = await b.subscribe(ch, since=position)
        during = len(published)
        await asyncio.wait_for(task, 30)
        assert published == list(range(6, total + 1))
        assert res["recovered"] is True, res
        assert during < total - 5, "publisher finished before the re-subscribe; the test raced nothing"
        recovered = _offsets(res["publications"])
        assert recovered == list(range(6, 6 + len(recovered))), "recovered list must be contiguous from 6"
        assert recovered[-1] == res["offset"], "recovered up to the offset the result reports"
        live_expected = total - res["offset"]
        await b.wait_pubs(ch, live_expected, timeout=10)
        await node.apublish(ch, "sentinel")
        live = _offsets(await b.wait_sentinel(ch, timeout=10))
        union = recovered + live
        assert union == list(range(6, total + 1)), (
            f"seam broken: recovered {recovered[:3]}..{recovered[-3:]}, live {live[:5]}...")
        data = [p["data"]["n"] for p in res["publications"]] + [p["data"]["n"] for p in b.pubs(ch)[:-1]]
        assert data == list(range(6, total + 1))

    run(main())


def test_recovery_fails_when_history_trimmed_past_position(node):
    async def main():
        ch = "rec:old"
        a = await connect(node)
        sub = await a.subscribe(ch)
        pub = await connect(node)
        await _publish_n(pub, ch, 1, 5)
        await a.wait_pubs(ch, 5)
        await a.close()
        await _publish_n(pub, ch, 6, 120)  # history keeps 26..125; 6..25 are gone
        b = await connect(node)
        res = await b.subscribe(ch, since={"offset": 5, "epoch": sub["epoch"]})
        assert res["recovered"] is False, res
        assert res["publications"] == [], "never a partial list"
        assert res["offset"] == 125
        h = await node.aapi_result("history", {"channel": ch})
        assert res["epoch"] == h["epoch"]
        # Still subscribed and live.
        await pub.publish(ch, {"n": 126})
        assert (await b.wait_pub(ch))["offset"] == 126

    run(main())


def test_recovery_fails_on_wrong_epoch(node):
    async def main():
        ch = "rec:epoch"
        a = await connect(node)
        sub = await a.subscribe(ch)
        for i in range(1, 4):
            await node.apublish(ch, {"n": i})
        await a.wait_pubs(ch, 3)
        await a.close()
        await node.apublish(ch, {"n": 4})
        b = await connect(node)
        bogus = sub["epoch"] + "-not"
        res = await b.subscribe(ch, since={"offset": 1, "epoch": bogus})
        assert res["recovered"] is False, res
        assert res["publications"] == []
        assert res["offset"] == 4
        assert res["epoch"] == sub["epoch"], "current epoch, not the one sent"

    run(main())


def test_connect_with_subs_recovers(node):
    async def main():
        ch, ch2 = "rec:connect", "rec:connect-fresh"
        a = await connect(node)
        sub = await a.subscribe(ch)
        await node.apublish(ch, {"n": 1})
        await node.apublish(ch, {"n": 2})
        await a.wait_pubs(ch, 2)
        await a.close()
        await node.apublish(ch, {"n": 3})
        await node.apublish(ch, {"n": 4})

        b = await connect(node, subs={ch: {"offset": 2, "epoch": sub["epoch"]}, ch2: {}})
        subs = b.info.get("subs")
        assert isinstance(subs, dict) and set(subs) == {ch, ch2}, b.info
        r = subs[ch]
        assert r["recovered"] is True
        assert _offsets(r["publications"]) == [3, 4]
        assert [p["data"] for p in r["publications"]] == [{"n": 3}, {"n": 4}]
        assert r["offset"] == 4 and r["epoch"] == sub["epoch"]
        assert isinstance(subs[ch2]["epoch"], str)

        # Both subscriptions are live; no duplicate of 3/4.
        await node.apublish(ch, {"n": 5})
        await node.apublish(ch2, "fresh")
        assert (await b.wait_pub(ch))["offset"] == 5
        assert (await b.wait_pub(ch2))["data"] == "fresh"
        assert _offsets(b.pubs(ch)) == [5]
        # Subscribing again to a channel from `subs` is "already subscribed".
        assert (await b.error("subscribe", {"channel": ch}))["code"] == 105

    run(main())
