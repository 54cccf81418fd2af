// Transports. Each one is one connection attempt; the client makes a new
// one for every attempt. They report to the client through:
//   client._connMessage(conn, obj)            every JSON object received
//   client._connClosed(conn, code, reason)    once, when the connection is over
//   client._rejectCommands(cmds, err)         an HTTP answer that has no replies for these commands
// (long-polling also asks client._pollSubs(conn) for the channels of each
// poll and tells client._pollProbed(subs)), read client._urls, _opts, _env,
// and offer open(), send(commands), close() (silent, no callback), `name`,
// `connected` (set by the client at the connect reply) and `opened` (the
// transport itself opened: WS open event, first SSE event, long-poll
// handshake answer), which decides whether a failure is a reason to fall back.

import {WebSocketConn} from './websocket.js';
import {SseConn} from './sse.js';
import {LongPollConn} from './longpoll.js';

/** The transport classes by name. */
export const TRANSPORT_CLASSES = {websocket: WebSocketConn, sse: SseConn, longpoll: LongPollConn};
