"""TLS on the node itself (`serve --tls-cert/--tls-key`): every transport over
TLS 1.2/1.3 with ALPN http/1.1, older versions refused, a certificate renewed
by SIGHUP without dropping open connections, and bad input on the TLS port."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
import requests

from balancerlib import make_certificate
from sbclient import Client, open_ws, run


def _context(cafile: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False  # the certificate names IP 127.0.0.1; verified as a chain
    return ctx


def _peer_der(node) -> bytes:
    """The certificate the node serves now (not verified: the test compares it byte for byte)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((node.host, node.port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def _der(pem_path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(open(pem_path).read())


async def _wss_client(node, cafile: str) -> Client:
    c = Client(await open_ws(node.ws_url, ssl=_context(cafile)))
    c.info = await c.result("connect", {})
    c.id = c.info["client"]
    return c


def _https(node, cafile: str, method: str, path: str, **kw) -> requests.Response:
    with requests.Session() as s:
        s.trust_env = False
        return s.request(method, node.http_url + path, verify=cafile, timeout=10, **kw)


def test_every_transport_over_tls(node_factory, tmp_path):
    cert, key = make_certificate(tmp_path, "ec")
    node = node_factory.start("--tls-cert", cert, "--tls-key", key)
    assert node.ws_url.startswith("wss://") and node.http_url.startswith("https://"), node.listen_line
    auth = {"Authorization": f"apikey {node.api_key}"}

    async def main():
        c = await _wss_client(node, cert)
        await c.subscribe("tls:room")
        r = await asyncio.to_thread(_https, node, cert, "POST", "/api/publish",
                                    json={"channel": "tls:room", "data": {"over": "tls"}}, headers=auth)
        assert r.status_code == 200 and "result" in r.json(), r.text
        assert (await c.wait_pubs("tls:room", 1))[0]["data"] == {"over": "tls"}
        await c.close()

    run(main())

    # Long-polling: a first poll gets the position, the next one the publication.
    first = _https(node, cert, "POST", "/poll", json={"subs": {"tls:poll": {}}, "timeout": 2})
    assert first.status_code == 200, first.text
    position = next(item["position"] for item in first.json() if "position" in item)
    assert _https(node, cert, "POST", "/api/publish", json={"channel": "tls:poll", "data": 7},
                  headers=auth).status_code == 200
    second = _https(node, cert, "POST", "/poll",
                    json={"subs": {"tls:poll": {"offset": position["offset"], "epoch": position["epoch"]}}, "timeout": 5})
    assert second.status_code == 200, second.text
    assert any(item.get("pub", {}).get("data") == 7 for item in second.json()), second.text

    # SSE: the stream's first event is the connect reply.
    with requests.Session() as s:
        s.trust_env = False
        with s.get(node.http_url + "/sse?connect=" + requests.utils.quote(json.dumps({})), verify=cert,
                   stream=True, timeout=10) as r:
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            data = next(line for line in r.iter_lines(decode_unicode=True) if line.startswith("data:"))
            assert '"client"' in data, data

    # Health over TLS, and plain HTTP on the TLS port is not served (no answer in clear text).
    assert _https(node, cert, "GET", "/readyz").status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        with requests.Session() as s:
            s.trust_env = False
            s.get(f"http://{node.host}:{node.port}/readyz", timeout=5)
    assert _https(node, cert, "GET", "/readyz").status_code == 200


def test_versions_and_alpn(node_factory, tmp_path):
    cert, key = make_certificate(tmp_path, "rsa")
    node = node_factory.start("--tls-cert", cert, "--tls-key", key)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = _context(cert)
        ctx.minimum_version = ctx.maximum_version = version
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection((node.host, node.port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as tls:
                assert tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
                assert tls.selected_alpn_protocol() == "http/1.1"
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert tls.recv(64).startswith(b"HTTP/1.1 200")
    # TLS 1.1 (and 1.0) are refused. openssl's client is allowed to offer them (SECLEVEL=0),
    # so the refusal is the server's.
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (scripts/test.sh installs it)")
    for flag in ("-tls1_1", "-tls1"):
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{node.port}", flag,
                              "-cipher", "DEFAULT:@SECLEVEL=0"],
                             input=b"", capture_output=True, timeout=20)
        text = (out.stdout + out.stderr).decode("utf-8", "replace")
        assert out.returncode != 0, f"{flag} handshake succeeded:\n{text[-800:]}"
        assert "Cipher is (NONE)" in text or "alert" in text or "no protocols available" in text, text[-800:]
    # A modern openssl client negotiates TLS 1.2 and http/1.1 via ALPN.
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{node.port}", "-tls1_2",
                          "-alpn", "http/1.1"], input=b"", capture_output=True, timeout=20)
    text = out.stdout.decode("utf-8", "replace")
    assert "ALPN protocol: http/1.1" in text, text[-800:]


def test_sighup_renews_the_certificate_and_keeps_connections(node_factory, tmp_path):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    old_cert, old_key = make_certificate(old_dir, "ec")
    new_cert, new_key = make_certificate(new_dir, "ec")
    live_cert, live_key = str(tmp_path / "live-cert.pem"), str(tmp_path / "live-key.pem")
    shutil.copy(old_cert, live_cert)
    shutil.copy(old_key, live_key)
    node = node_factory.start("--tls-cert", live_cert, "--tls-key", live_key)
    assert _peer_der(node) == _der(old_cert)

    async def main():
        c = await _wss_client(node, old_cert)
        await c.subscribe("tls:renew")
        shutil.copy(new_cert, live_cert)
        shutil.copy(new_key, live_key)
        node.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _peer_der(node) != _der(new_cert):
            assert time.monotonic() < deadline, "the new certificate was not served within 10 s of SIGHUP"
            await asyncio.sleep(0.05)
        # The connection opened before the reload is still served.
        r = await asyncio.to_thread(_https, node, new_cert, "POST", "/api/publish",
                                    json={"channel": "tls:renew", "data": "after reload"},
                                    headers={"Authorization": f"apikey {node.api_key}"})
        assert r.status_code == 200, r.text
        assert (await c.wait_pubs("tls:renew", 1))[0]["data"] == "after reload"
        # A broken file on the next SIGHUP keeps the current certificate; the node stays up.
        open(live_key, "w").write("not a key\n")
        node.signal(signal.SIGHUP)
        await c.publish("tls:renew", "still here")
        await c.wait_pubs("tls:renew", 2)
        assert node.alive()
        assert _peer_der(node) == _der(new_cert)
        await c.close()

    run(main())
    assert "TLS reload failed" in node.log_tail(200)


def test_tls_options_are_checked_at_start(node_factory, tmp_path):
    from sbclient import NodeStartError
    cert, key = make_certificate(tmp_path, "ec")
    with pytest.raises(NodeStartError, match="--tls-cert and --tls-key go together"):
        node_factory.start("--tls-cert", cert)
    with pytest.raises(NodeStartError, match="--tls-key"):
        node_factory.start("--tls-cert", cert, "--tls-key", str(tmp_path / "missing.pem"))


def test_a_silent_tls_client_is_cut_at_the_head_deadline(node_factory, tmp_path):
    cert, key = make_certificate(tmp_path, "ec")
    node = node_factory.start("--tls-cert", cert, "--tls-key", key, "--head-timeout", "1")
    t0 = time.monotonic()
    with socket.create_connection((node.host, node.port), timeout=10) as raw:
        raw.sendall(bytes.fromhex("16030100"))  # the start of a ClientHello, and nothing more
        assert raw.recv(1) == b"", "the node kept a silent TLS handshake open"
    assert time.monotonic() - t0 < 5, f"cut after {time.monotonic() - t0:.2f}s with a 1 s head deadline"
    assert _https(node, cert, "GET", "/readyz").status_code == 200
