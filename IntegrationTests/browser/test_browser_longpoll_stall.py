"""A long-poll whose answer starts and then stalls (headers and one byte of
body, then nothing) must not leave the browser client `connected` forever:
the poll's deadline covers the body (issue 15, bug 9). `/poll` goes to a
server made to stall; `/rpc` and everything else to the node."""

from __future__ import annotations

import http.server
import json
import threading

from test_browser_client import client_page, rec, wait_state


class StallingPollServer:
    """`POST /poll`: a probe (timeout 0) gets `[]` at once; any other poll gets a 200 with
    Content-Length 1000, one byte of body, and then nothing until stop()."""

    def __init__(self) -> None:
        outer = self
        self.stalled = 0
        self.release = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                if body.get("timeout") == 0:
                    data = b"[]"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                outer.stalled += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"[")
                self.wfile.flush()
                outer.release.wait(60)  # bounded: stop() releases it
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_a_stalled_long_poll_body_ends_the_connection(node_factory, proxies, browsers):
    stall = StallingPollServer()
    try:
        node = node_factory.start()
        proxy = proxies.start([node], routes={"{ path /poll }": stall.port})
        page, _ = client_page(browsers, node_factory, proxies, "longpoll", origin=proxy.url,
                              options={"pollTimeout": 1000})
        page.js("window.follow('bt:stall'); window.t.connect()")
        wait_state(page, "connected")
        page.wait(lambda: stall.stalled >= 1, 15, "a poll stalled by the server")
        # The poll's deadline is its timeout (1 s) + 10 s, body included.
        page.wait(lambda: any(not d[1] is False for d in rec(page)["disconnected"]), 30,
                  "the client to end the connection whose poll stalled")
        page.wait(lambda: rec(page)["states"].count("connecting") >= 2, 15, "a new attempt")
        r = rec(page)
        assert r["disconnected"] and r["disconnected"][0][1] is True, r["disconnected"]
    finally:
        stall.stop()
