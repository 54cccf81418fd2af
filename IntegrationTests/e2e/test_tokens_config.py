"""JWT tokens, namespace options from a config file, option precedence."""

from __future__ import annotations

import asyncio
import json
import time

from sbclient import TOKEN_SECRET, _b64url, connect, connect_expect_close, make_jwt, run, user_token

NAMESPACES_YAML = """\
# written by IntegrationTests/e2e/test_tokens_config.py
namespaces:
  secret:
    historySize: 100
    historyTTL: 300
    presence: true
    joinLeave: true
    publish: false
    anonymous: false
  nohist:
    historySize: 0
    historyTTL: 300
    presence: true
    joinLeave: true
    publish: true
    anonymous: true
  nopres:
    historySize: 100
    historyTTL: 300
    presence: false
    joinLeave: false
    publish: true
    anonymous: true
"""


def test_valid_token_sets_user(token_node):
    async def main():
        c = await connect(token_node, token=user_token(TOKEN_SECRET, "bob"))
        assert c.info["user"] == "bob"
        # No `exp` claim at all is valid too.
        c2 = await connect(token_node, token=make_jwt(TOKEN_SECRET, {"sub": "carol"}))
        assert c2.info["user"] == "carol"
        # The user shows in pub info.
        await c2.subscribe("tok:info")
        await c.publish("tok:info", "hi")
        pub = await c2.wait_pub("tok:info")
        assert pub["info"] == {"client": c.id, "user": "bob"} or (
            pub["info"]["client"] == c.id and pub["info"]["user"] == "bob")

    run(main())


def test_bad_signature_closes_3500(token_node):
    async def main():
        good = user_token(TOKEN_SECRET, "bob")
        h, p, s = good.split(".")
        tampered_payload = _b64url(json.dumps({"sub": "admin", "exp": int(time.time()) + 3600}).encode())
        bad_tokens = [
            user_token("wrong-secret", "bob"),
            f"{h}.{tampered_payload}.{s}",
            "not-a-jwt",
            make_jwt(TOKEN_SECRET, {"sub": "bob"}, header={"alg": "none", "typ": "JWT"}).rsplit(".", 1)[0] + ".",
        ]
        for tok in bad_tokens:
            code, reply = await connect_expect_close(token_node, tok)
            assert code == 3500, f"token {tok[:40]}...: close {code}, reply {reply}"
            assert reply is None or "result" not in reply, f"bad token accepted: {reply}"

    run(main())


def test_expired_token_closes_3503(token_node):
    async def main():
        tok = user_token(TOKEN_SECRET, "bob", ttl=-60)
        code, reply = await connect_expect_close(token_node, tok)
        assert code == 3503, f"close {code}, reply {reply}"
        assert reply is None or "result" not in reply

    run(main())


def test_namespace_permissions_and_features(node_factory):
    node = node_factory.start(token_secret=TOKEN_SECRET, config_text=NAMESPACES_YAML)

    async def main():
        anon = await connect(node)
        user = await connect(node, token=user_token(TOKEN_SECRET, "dave"))

        # secret: anonymous may not subscribe, nobody may publish from a client.
        assert (await anon.error("subscribe", {"channel": "secret:x"}))["code"] == 103
        await user.subscribe("secret:x")
        assert (await user.error("publish", {"channel": "secret:x", "data": 1}))["code"] == 103
        assert (await anon.error("publish", {"channel": "secret:x", "data": 1}))["code"] == 103
        # The server API may publish there, and the authorized subscriber gets it.
        r = await node.apublish("secret:x", {"from": "api"})
        assert r["offset"] == 1
        assert (await user.wait_pub("secret:x"))["data"] == {"from": "api"}
        assert [p["data"] for p in user.pubs("secret:x")] == [{"from": "api"}], "rejected publishes leaked"
        # The connections are still fine after the errors.
        assert await anon.result("ping", {}) == {}

        # nohist: no history, no offsets.
        sub = await anon.subscribe("nohist:x")
        assert "recovered" not in sub
        r = await user.publish("nohist:x", {"n": 1})
        assert "offset" not in r, f"no history -> no offset in publish result: {r}"
        pub = await anon.wait_pub("nohist:x")
        assert pub["data"] == {"n": 1}
        assert "offset" not in pub, f"no history -> pubs carry no offset: {pub}"
        assert pub["info"]["client"] == user.id
        assert (await anon.error("history", {"channel": "nohist:x"}))["code"] == 108
        assert (await node.aapi_error("history", {"channel": "nohist:x"}))["code"] == 108
        r = await node.apublish("nohist:x", {"n": 2})
        assert "offset" not in r
        assert "offset" not in await anon.wait_pub("nohist:x")

        # nopres: presence off, no join/leave pushes.
        await anon.subscribe("nopres:x")
        assert (await anon.error("presence", {"channel": "nopres:x"}))["code"] == 108
        assert (await anon.error("presenceStats", {"channel": "nopres:x"}))["code"] == 108
        assert (await node.aapi_error("presence", {"channel": "nopres:x"}))["code"] == 108
        await user.subscribe("nopres:x")
        await user.result("unsubscribe", {"channel": "nopres:x"})
        await node.apublish("nopres:x", "marker")
        await anon.wait_pub("nopres:x")
        assert not [p for p in anon.pushes if p.get("channel") == "nopres:x" and ("join" in p or "leave" in p)]

        # Channels outside the listed namespaces keep the defaults.
        await anon.subscribe("plain")
        await anon.publish("plain", 1)
        h = await anon.result("history", {"channel": "plain"})
        assert [p["offset"] for p in h["publications"]] == [1]

    run(main())


def test_json_config_and_precedence(node_factory):
    """flags > environment > config file > defaults."""
    grants = {"allowSubscribeForClient": True, "allowSubscribeForAnonymous": True}
    cfg = json.dumps({"defaults": grants, "maxSubscriptions": 3, "apiKey": "from-config", "pingInterval": 7,
                      "tokenSecret": "cfg-secret-0123456789abcdef-0123456789"})
    node = node_factory.start(
        config_text=cfg, config_name="switchboard.json", api_key="from-flag",
        env={"SWITCHBOARD_API_KEY": "from-env", "SWITCHBOARD_PING_INTERVAL": "9",
             "SWITCHBOARD_TOKEN_SECRET": "env-secret-0123456789abcdef-0123456789"})

    assert node.api("info", {}, key="from-flag").status_code == 200
    assert node.api("info", {}, key="from-env").status_code == 401
    assert node.api("info", {}, key="from-config").status_code == 401

    async def main():
        c = await connect(node)
        assert c.info["ping"] == 9, "environment beats the config file"
        for i in range(3):
            await c.subscribe(f"cfg:{i}")
        assert (await c.error("subscribe", {"channel": "cfg:3"}))["code"] == 106
        t = await connect(node, token=user_token("env-secret-0123456789abcdef-0123456789", "erin"))
        assert t.info["user"] == "erin"
        code, _ = await connect_expect_close(node, user_token("cfg-secret-0123456789abcdef-0123456789", "erin"))
        assert code == 3500

    run(main())


def test_token_expiring_during_a_live_connection_closes_3503(node_factory):
    """A token that was valid at connect and expires while the connection is up: the node closes it
    with 3503 after the refresh grace (token expired: the client reconnects only with a new token)."""
    token_node = node_factory.start(token_secret=TOKEN_SECRET, config_text="tokens:\n  refreshGrace: 1\n")

    async def main():
        c = await connect(token_node, token=user_token(TOKEN_SECRET, "bob", ttl=2))
        await c.subscribe("tok:live")
        assert await c.result("ping", {}) == {}, "the connection works before the expiry"
        code = await c.wait_closed(timeout=20)
        assert code == 3503, f"closed with {code}, not 3503, when the token expired"
        pushes = [p["disconnect"]["code"] for p in c.pushes if "disconnect" in p]
        assert pushes in ([], [3503]), f"disconnect pushes {pushes}"

    run(main())
