"""Helpers for the Switchboard end-to-end tests, one import for all of them.

The code lives in modules by role; this module re-exports their names so
that `from sbclient import ...` keeps working:

- `sbwire`: wire formats with no sockets (WebSocket frames, chunked bodies,
  the SSE event stream) and bounded waits; tested on their own in test_sbwire.py.
- `sbproc`: the processes (`Node`: `switchboard serve`; `RedisServer`), on
  loopback ports chosen at run time.
- `sbjwt`: HS256 tokens (`make_jwt`, `user_token`).
- `sbws`: `Client` (protocol v1 over `websockets`), `RawWS` (frames by hand),
  `SteadyTraffic`, `run`.
- `sbresilient`: `ResilientSubscriber`, `stream_problems`, `ApiPublisher`.
- `sbsse`: `SSEStream`, SSE command POSTs, long-polls and rpc.

No loop in any of them is unbounded: every wait has a deadline.
"""

from __future__ import annotations

from sbwire import (  # noqa: F401
    OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, wait_until, ws_frame, parse_frame, close_code, text_objects, ChunkDecoder, SSEEvent, SSEParser)
from sbproc import (  # noqa: F401
    REPO_ROOT, LISTEN_RE, DEFAULT_TIMEOUT, TOKEN_SECRET, OPEN_PERMISSIONS_YAML, binary_path, NodeStartError, Node, free_port,
    redis_binary, resp_ping, RedisStartError, RedisServer, start_redis)
from sbjwt import (_b64url, make_jwt, user_token)  # noqa: F401
from sbws import (  # noqa: F401
    ClosedBeforeReply, _OPEN_CLIENTS, Client, _being_cancelled, open_ws, open_client, connect,
    connect_expect_close, close_all_clients, _BACKGROUND, stop_background, run, SteadyTraffic, RawEOF, RawWS,
    connect_url)
from sbresilient import (is_told, ResilientSubscriber, stream_problems, ApiPublisher)  # noqa: F401
from sbsse import (  # noqa: F401
    b64url_decode, b64url_encode_json, decode_event_id, _OPEN_SSE, SSEStream, close_all_sse, commands_body,
    sse_post, lp_poll, lp_rpc)
