// Switchboard browser client: protocol v1 over WebSocket, SSE and long-polling.
//
// An ES module with no dependencies:
//
//   import {Switchboard} from '/switchboard.js';
//   const sb = new Switchboard();                      // the page's own node
//   const sub = sb.subscribe('chat:lobby', {onPublication: pub => console.log(pub.offset, pub.data)});
//   sb.connect();
//   await sb.publish('chat:lobby', {text: 'hi'});
//
// The source is in modules under clients/js/src/ (this is its entry point);
// nodes serve one file, clients/js/switchboard.js, which `node
// clients/js/build.mjs` makes from them (no dependencies; a unit test checks
// that the file is the bundle of the modules). The modules:
//
//   errors.js            SwitchboardError, terminal codes
//   env.js               WebSocket, fetch, ReadableStream, timers, window events: injectable (options.env)
//   util.js              constants, framing, channel names, endpoints, sizes
//   backoff.js           Backoff (full or equal jitter)
//   queue.js             RequestQueue (replies, deadlines, resends), splitBatches and PostQueue:
//                        bodies and frames capped at the node's limit
//   http.js              fetchText: one deadline per HTTP exchange, body included
//   eventstream.js       EventStreamParser: text/event-stream from fetch's body, chunks split anywhere
//   emitter.js           the event emitter
//   subscription.js      Subscription
//   subscriptions.js     the client's subscription handling (subscribe results, retries, long-poll items)
//   transports/          WebSocketConn, SseConn, LongPollConn (one connection attempt each)
//   ladder.js            TransportLadder: fallback to the next transport, climb back to WebSocket (pure)
//   connection.js        ConnectionMachine: the connection state machine (lifecycle, ladder, reconnect
//                        decisions, backoff): pure, its methods return actions
//   client.js            Switchboard: the shell that runs the machine's actions (transports, timers,
//                        window/document events, listeners)
//
// Unit tests: clients/js/test/ (`node --test clients/js/test/*.test.mjs`), with fake
// timers and a fake server injected through `options.env`.
// See clients/js/README.md for the rules it follows (fallback, reconnect,
// recovery) and docs/transports.md for the HTTP contract.

import {SwitchboardError, toError, isTerminal} from './errors.js';
import {makeEnv} from './env.js';
import {VERSION, byteLength, parseLines, endpoints} from './util.js';
import {Backoff} from './backoff.js';
import {splitBatches, PostQueue} from './queue.js';
import {fetchText} from './http.js';
import {Subscription} from './subscription.js';
import {Switchboard} from './client.js';

export {VERSION, SwitchboardError, toError, isTerminal, makeEnv, byteLength, parseLines, endpoints, Backoff,
  splitBatches, PostQueue, fetchText, Subscription, Switchboard};
export default Switchboard;
