// src/transports/: each transport on its own, with a stub client that
// records what the transport reports (_connMessage, _connClosed,
// _rejectCommands) and fake WebSocket / fetch (with a ReadableStream body for SSE).

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {FakeClock, flush} from './fakes.mjs';
import {WebSocketConn} from '../src/transports/websocket.js';
import {SseConn} from '../src/transports/sse.js';
import {LongPollConn} from '../src/transports/longpoll.js';
import {TRANSPORT_CLASSES} from '../src/transports/index.js';
import {endpoints} from '../src/util.js';

function host(over = {}) {
  const clock = new FakeClock(0);
  const h = {
    clock, messages: [], closed: [], rejected: [], errors: [], probed: [],
    _env: {setTimeout: (fn, ms) => clock.setTimeout(fn, ms), clearTimeout: id => clock.clear(id), now: () => clock.t,
      random: () => 0.5, AbortController, ...over.env},
    _urls: endpoints('http://127.0.0.1:9'),
    _opts: {maxMessageSize: 1024, requestTimeout: 5000, pollTimeout: 25000},
    _pollClient: 'pc1',
    _log() {},
    _connMessage(conn, obj) { h.messages.push(obj); },
    _connClosed(conn, code, reason) { h.closed.push([code, reason]); },
    _rejectCommands(cmds, err) { h.rejected.push([cmds.map(c => c.id), err.code]); },
    _emitError(err) { h.errors.push(err.code); },
    _pollSubs: () => ({subs: {a: {offset: 1, epoch: 'e'}}, probe: []}),
    _pollProbed(probe) { h.probed.push(probe); },
    _pollTokens: async () => {},
  };
  return h;
}

const answer = (status, body) => ({status, text: async () => (typeof body === 'string' ? body : JSON.stringify(body))});

test('transports/index.js names the three classes', () => {
  assert.deepEqual(Object.keys(TRANSPORT_CLASSES), ['websocket', 'sse', 'longpoll']);
  for (const [name, C] of Object.entries(TRANSPORT_CLASSES)) assert.equal(new C(host({env: {fetch: () => {}}}), {}).name, name);
});

// -- WebSocket --------------------------------------------------------------

class WS {
  constructor(url) { this.url = url; this.readyState = 0; this.sent = []; WS.last = this; }
  send(t) { this.sent.push(t); }
  close(code) { this.closedWith = code; this.readyState = 3; }
  open() { this.readyState = 1; this.onopen({}); }
}

test('websocket: connect on open, one message per JSON line, close reported once', () => {
  const h = host({env: {WebSocket: WS}});
  const c = new WebSocketConn(h, {version: 'v', token: 't'});
  c.open();
  assert.equal(WS.last.url, 'ws://127.0.0.1:9/ws');
  WS.last.open();
  assert.equal(c.opened, true);
  assert.deepEqual(JSON.parse(WS.last.sent[0]), {id: 1, connect: {version: 'v', token: 't'}});
  WS.last.onmessage({data: '{"id":1,"result":{}}\n{}\nbad\n{"channel":"a","pub":{"offset":1}}'});
  WS.last.onmessage({data: new ArrayBuffer(2)});
  assert.deepEqual(h.messages, [{id: 1, result: {}}, {}, {channel: 'a', pub: {offset: 1}}]);
  WS.last.onclose({code: 3001, reason: 'drain'});
  WS.last.onclose({code: 1006, reason: ''});
  assert.deepEqual(h.closed, [[3001, 'drain']]);
});

test('websocket: a close before open is "cannot open"; a constructor that throws is reported from a timer', () => {
  const h = host({env: {WebSocket: WS}});
  new WebSocketConn(h, {}).open();
  WS.last.onclose({code: 1006});
  assert.deepEqual(h.closed, [[1006, 'cannot open']]);
  const h2 = host({env: {WebSocket: class { constructor() { throw new Error('blocked'); } }}});
  new WebSocketConn(h2, {}).open();
  assert.deepEqual(h2.closed, [], 'not from inside open()');
  h2.clock.tick(0);
  assert.match(h2.closed[0][1], /^cannot create WebSocket/);
});

test('websocket: commands go in frames of at most maxMessageSize bytes, in order', () => {
  const h = host({env: {WebSocket: WS}});
  const c = new WebSocketConn(h, {});
  c.open();
  WS.last.open();
  const cmds = Array.from({length: 30}, (_, i) => ({id: i + 2, publish: {channel: 'a', data: 'x'.repeat(100)}}));
  c.send(cmds);
  const frames = WS.last.sent.slice(1);
  assert.ok(frames.length > 1);
  for (const f of frames) assert.ok(Buffer.byteLength(f) <= 1024);
  assert.deepEqual(frames.join('\n').split('\n').map(l => JSON.parse(l).id), cmds.map(c => c.id));
  c.pong();
  assert.equal(WS.last.sent.at(-1), '{}');
});

test('websocket: close() is silent and closes with 1000', () => {
  const h = host({env: {WebSocket: WS}});
  const c = new WebSocketConn(h, {});
  c.open();
  const ws = WS.last;
  ws.open();
  c.close();
  assert.equal(ws.closedWith, 1000);
  assert.equal(ws.onclose, null);
  assert.deepEqual(h.closed, []);
  c.send([{id: 2, ping: {}}]);
  assert.equal(ws.sent.length, 1, 'nothing sent after close()');
});

// -- SSE --------------------------------------------------------------------

// A fetch for the SSE transport: `POST /sse` (no session) answers a stream the test feeds
// (`streams[i].push(text or bytes)`, `.end()`, `.fail(err)`); command POSTs go to `commands`.
function sseFetch(commands = () => Promise.resolve(answer(202, '')), status = 200) {
  const streams = [];
  const fetch = (url, init) => {
    if (new URL(url).searchParams.has('session')) return commands(url, init);
    const s = {url, init, cancelled: false};
    s.body = new ReadableStream({start: c => { s.ctrl = c; }, cancel: () => { s.cancelled = true; }});
    s.push = x => s.ctrl.enqueue(typeof x === 'string' ? new TextEncoder().encode(x) : x);
    s.end = () => s.ctrl.close();
    s.fail = e => s.ctrl.error(e);
    init.signal.addEventListener('abort', () => { s.aborted = true; });
    streams.push(s);
    const refusal = '{"error":{"code":107,"message":"nope"}}';
    if (status !== 200) { s.push(refusal); s.end(); }  // a refusal's body, as a real answer carries it
    return Promise.resolve({status, body: s.body, text: async () => refusal});
  };
  return {fetch, streams, get last() { return streams[streams.length - 1]; }};
}

const ev = obj => 'data: ' + JSON.stringify(obj) + '\nid: ' + 'x' + '\n\n';

test('sse: connect params POSTed as JSON (never in the URL), session from the connect reply, commands POSTed to it; 202 is quiet', async () => {
  const posts = [];
  const f = sseFetch((url, init) => { posts.push([url, init.body]); return Promise.resolve(answer(202, '')); });
  const h = host({env: {fetch: f.fetch}});
  const c = new SseConn(h, {version: 'v', token: 'secret.token', subs: {a: {}}});
  c.open();
  assert.equal(f.last.url, 'http://127.0.0.1:9/sse', 'no query: the token is not in the URL');
  assert.equal(f.last.init.method, 'POST');
  assert.equal(f.last.init.headers['Content-Type'], 'application/json');
  assert.deepEqual(JSON.parse(f.last.init.body), {version: 'v', token: 'secret.token', subs: {a: {}}});
  assert.equal(f.last.init.headers['Last-Event-ID'], undefined, 'nothing to resume on a first attempt');
  f.last.push(ev({id: 1, result: {session: 's9'}}));
  await flush();
  assert.equal(c.opened, true);
  assert.equal(c.session, 's9');
  c.send([{id: 2, ping: {}}]);
  await flush();
  assert.deepEqual(posts, [['http://127.0.0.1:9/sse?session=s9', '{"id":2,"ping":{}}']]);
  assert.deepEqual(h.closed, []);
});

test('sse: bodies capped at maxMessageSize; one POST at a time', async () => {
  const posts = [];
  let inFlight = 0, max = 0;
  const f = sseFetch((url, init) => {
    inFlight++; max = Math.max(max, inFlight); posts.push(init.body);
    return new Promise(r => setImmediate(() => { inFlight--; r(answer(202, '')); }));
  });
  const h = host({env: {fetch: f.fetch}});
  const c = new SseConn(h, {});
  c.open();
  f.last.push(ev({id: 1, result: {session: 's'}}));
  await flush();
  for (let i = 0; i < 40; i++) c.send([{id: i + 2, publish: {channel: 'a', data: 'x'.repeat(100)}}]);
  for (let i = 0; i < 20; i++) await flush();
  assert.equal(max, 1);
  for (const b of posts) assert.ok(Buffer.byteLength(b) <= 1024);
  assert.equal(posts.join('\n').split('\n').length, 40);
});

test('sse: a POST answered 404 or 5xx, or failing, ends the connection; 400 rejects its commands (107)', async () => {
  for (const [status, want] of [[404, 'command POST answered 404'], [503, 'command POST answered 503']]) {
    const f = sseFetch(() => Promise.resolve(answer(status, '')));
    const h = host({env: {fetch: f.fetch}});
    const c = new SseConn(h, {});
    c.open();
    f.last.push(ev({id: 1, result: {session: 's'}}));
    await flush();
    c.send([{id: 2, ping: {}}]);
    await flush();
    assert.deepEqual(h.closed, [[0, want]]);
    assert.equal(f.last.aborted, true, 'the stream is closed');
  }
  const f = sseFetch(() => Promise.resolve(answer(400, {error: {code: 107, message: 'bad'}})));
  const h = host({env: {fetch: f.fetch}});
  const c = new SseConn(h, {});
  c.open();
  c.send([{id: 2, ping: {}}, {id: 3, ping: {}}]);
  await flush();
  assert.deepEqual(h.rejected, [[[2, 3], 107]]);
  assert.deepEqual(h.closed, []);
  const f3 = sseFetch(() => Promise.reject(new TypeError('network')));
  const h3 = host({env: {fetch: f3.fetch}});
  const c3 = new SseConn(h3, {});
  c3.open();
  c3.send([{id: 2, ping: {}}]);
  await flush();
  assert.match(h3.closed[0][1], /^command POST failed/);
});

test('sse: an end before the first event is "cannot open", after it "stream ended"; a refusal says its status; close() is silent', async () => {
  const f = sseFetch();
  const h = host({env: {fetch: f.fetch}});
  new SseConn(h, {}).open();
  await flush();
  f.last.end();
  const f2 = sseFetch();
  const h2 = host({env: {fetch: f2.fetch}});
  new SseConn(h2, {}).open();
  f2.last.push('data: {}\n\n');
  await flush();
  f2.last.fail(new Error('reset'));
  await flush();
  assert.deepEqual([h.closed, h2.closed], [[[0, 'cannot open']], [[0, 'stream ended: Error: reset']]]);
  const f4 = sseFetch(undefined, 400);
  const h4 = host({env: {fetch: f4.fetch}});
  new SseConn(h4, {}).open();
  await flush();
  assert.match(h4.closed[0][1], /^cannot open: HTTP 400 .*nope/);
  const h5 = host({env: {fetch: () => Promise.reject(new TypeError('refused'))}});
  new SseConn(h5, {}).open();
  await flush();
  assert.deepEqual(h5.closed, [[0, 'cannot open: TypeError: refused']]);
  const f3 = sseFetch();
  const h3 = host({env: {fetch: f3.fetch}});
  const c3 = new SseConn(h3, {});
  c3.open();
  await flush();
  c3.close();
  await flush();
  assert.equal(f3.last.aborted, true);
  assert.equal(f3.last.cancelled, true, 'the body is cancelled');
  assert.deepEqual(h3.closed, []);
});

test('sse: events split anywhere (mid-line, mid CRLF, mid UTF-8) arrive whole; the last id is kept for the next attempt', async () => {
  const f = sseFetch();
  const h = host({env: {fetch: f.fetch}});
  const c = new SseConn(h, {});
  c.open();
  await flush();
  const bytes = new TextEncoder().encode(': hi\r\ndata: {"id":1,"result":{"session":"s"}}\r\nid: abc\r\n\r\ndata: {"channel":"é€😀","pub":{"offset":1}}\nid: def\n\n');
  for (let i = 0; i < bytes.length; i++) f.last.push(bytes.slice(i, i + 1));
  await flush();
  assert.deepEqual(h.messages, [{id: 1, result: {session: 's'}}, {channel: 'é€😀', pub: {offset: 1}}]);
  assert.equal(h._sseLastEventId, 'def');
  // An empty id (the node's id would not fit in a header) resets it, as in EventSource; an event
  // with no id line keeps the last one.
  f.last.push(new TextEncoder().encode('data: {"channel":"x","pub":{"offset":2}}\nid: \n\n'));
  await flush();
  assert.equal(h._sseLastEventId, null);
  f.last.push(new TextEncoder().encode('data: {"channel":"x","pub":{"offset":3}}\nid: ghi\n\ndata: {"channel":"x","pub":{"offset":4}}\n\n'));
  await flush();
  assert.equal(h._sseLastEventId, 'ghi');
});

test('sse: Last-Event-ID is sent on a reconnect only when its channels are all subscribed from exactly its positions (never ahead of what was delivered)', async () => {
  const id = Buffer.from(JSON.stringify({a: {offset: 5, epoch: 'e'}, 'b:é': {offset: 2, epoch: 'f'}})).toString('base64url');
  const cases = [
    [{a: {offset: 5, epoch: 'e'}, 'b:é': {offset: 2, epoch: 'f'}, c: {}}, id],  // the same positions (c: not in the id)
    [{a: {offset: 4, epoch: 'e'}, 'b:é': {offset: 2, epoch: 'f'}, c: {}}, undefined],  // the id is ahead for a: 5 was never delivered
    [{a: {offset: 6, epoch: 'e'}, 'b:é': {offset: 2, epoch: 'f'}}, undefined],  // the id is behind for a
    [{a: {offset: 5, epoch: 'e'}}, undefined],                              // b:é unsubscribed meanwhile
    [{a: {offset: 5, epoch: 'other'}, 'b:é': {offset: 2, epoch: 'f'}}, undefined],  // a stream reset
    [{a: {}, 'b:é': {offset: 2, epoch: 'f'}}, undefined],                    // no position for a
  ];
  for (const [subs, want] of cases) {
    const f = sseFetch();
    const h = host({env: {fetch: f.fetch}});
    h._sseLastEventId = id;
    new SseConn(h, {subs}).open();
    assert.equal(f.last.init.headers['Last-Event-ID'], want, JSON.stringify(subs));
  }
  const f = sseFetch();
  const h = host({env: {fetch: f.fetch}});
  h._sseLastEventId = 'not base64 json';
  new SseConn(h, {subs: {a: {offset: 1, epoch: 'e'}}}).open();
  assert.equal(f.last.init.headers['Last-Event-ID'], undefined);
});

// -- long-polling ------------------------------------------------------------

test('longpoll: the handshake is an rpc ping with the token; its answer stands for the connect reply', async () => {
  const calls = [];
  const h = host({env: {fetch: (url, init) => { calls.push([url, init.headers, init.body]); return Promise.resolve(answer(200, [{id: 1, result: {version: '1.1'}}])); }}});
  const c = new LongPollConn(h, {token: 'tok'});
  c.open();
  await flush();
  assert.deepEqual(calls, [['http://127.0.0.1:9/rpc', {'Content-Type': 'text/plain', Authorization: 'Bearer tok'}, '{"id":1,"ping":{}}']]);
  assert.equal(c.opened, true);
  assert.deepEqual(h.messages, [{id: 1, result: {client: 'pc1', transport: 'longpoll', ping: 0, pong: false, version: '1.1'}}]);
});

test('longpoll: handshake answers: 401 (3500, or 3503 when expired), 503 (3001), 500, not an array, an error reply', async () => {
  const cases = [
    [answer(401, {error: {code: 101, message: 'invalid token'}}), [[3500, 'invalid token']]],
    [answer(401, {error: {code: 109, message: 'token expired'}}), [[3503, 'token expired']]],
    [answer(401, {error: {code: 101, message: 'token expired'}}), [[3503, 'token expired']]],
    [answer(503, ''), [[3001, 'node draining']]],
    [answer(500, ''), [[0, 'rpc answered HTTP 500']]],
    [answer(200, '{"not":"array"}'), [[0, 'rpc answer is not a JSON array']]],
  ];
  for (const [resp, want] of cases) {
    const h = host({env: {fetch: () => Promise.resolve(resp)}});
    new LongPollConn(h, {}).open();
    await flush();
    assert.deepEqual(h.closed, want);
  }
  const h = host({env: {fetch: () => Promise.resolve(answer(200, [{id: 1, error: {code: 103, message: 'denied'}}]))}});
  new LongPollConn(h, {}).open();
  await flush();
  assert.deepEqual(h.messages, [{id: 1, error: {code: 103, message: 'denied'}}]);
});

test('longpoll: rpc replies go to the client; 400 rejects the commands; 403 ends the connection', async () => {
  let next = answer(200, [{id: 2, result: {}}, {id: 3, error: {code: 102}}]);
  const h = host({env: {fetch: () => Promise.resolve(next)}});
  const c = new LongPollConn(h, {});
  c.send([{id: 2, ping: {}}, {id: 3, history: {channel: 'x'}}]);
  await flush();
  assert.deepEqual(h.messages, [{id: 2, result: {}}, {id: 3, error: {code: 102}}]);
  next = answer(400, {error: {code: 107, message: 'bad'}});
  c.send([{id: 4, ping: {}}]);
  await flush();
  assert.deepEqual(h.rejected, [[[4], 107]]);
  next = answer(403, '');
  c.send([{id: 5, ping: {}}]);
  await flush();
  assert.deepEqual(h.closed, [[0, 'rpc answered HTTP 403']]);
});

test('longpoll: polls carry the channels, positions, client id and timeout; a probe polls with timeout 0', async () => {
  const polls = [];
  let probe = ['subA'];
  const h = host({env: {fetch: (url, init) => {
    polls.push(JSON.parse(init.body));
    if (polls.length >= 3) return new Promise(() => {});  // then hold
    return Promise.resolve(answer(200, [{channel: 'a', pub: {offset: 2}}]));
  }}});
  h._pollSubs = () => { const r = {subs: {a: {offset: 1, epoch: 'e'}}, probe}; probe = []; return r; };
  const c = new LongPollConn(h, {});
  c.connected = true;
  c.restartPoll();
  h.clock.tick(5);
  for (let i = 0; i < 5; i++) await flush();
  assert.deepEqual(polls[0], {subs: {a: {offset: 1, epoch: 'e'}}, timeout: 0, client: 'pc1'});
  assert.deepEqual(h.probed, [['subA']]);
  assert.equal(polls[1].timeout, 25);
  assert.deepEqual(h.messages, [{channel: 'a', pub: {offset: 2}}, {channel: 'a', pub: {offset: 2}}]);
  c.close();
});

test('longpoll: a poll refused with 400 reports the error and ends with 3501; 401 expired with 3503', async () => {
  for (const [resp, code] of [[answer(400, {error: {code: 107, message: 'bad subs'}}), 3501], [answer(401, {error: {code: 109, message: 'expired'}}), 3503]]) {
    const h = host({env: {fetch: () => Promise.resolve(resp)}});
    const c = new LongPollConn(h, {});
    c.connected = true;
    c.restartPoll();
    h.clock.tick(5);
    await flush();
    assert.equal(h.closed[0][0], code);
    if (code === 3501) assert.deepEqual(h.errors, [107]);
  }
});

test('longpoll: 429 is retried after a pause, at most ten times running', async () => {
  let n = 0;
  const h = host({env: {fetch: () => { n++; return Promise.resolve(answer(429, '')); }}});
  const c = new LongPollConn(h, {});
  c.connected = true;
  c.restartPoll();
  h.clock.tick(5);
  for (let i = 0; i < 12; i++) { await flush(); h.clock.tick(5000); }
  await flush();
  assert.equal(n, 11);
  assert.deepEqual(h.closed, [[0, 'poll refused with 429 ten times']]);
});

test('longpoll: a quick answer that moved nothing ([0], a publication seen already) waits 500 ms before the next poll; one that moved something does not', async () => {
  for (const moves of [false, true]) {
    let n = 0;
    const h = host({env: {fetch: () => { n++; return n > 40 ? new Promise(() => {}) : Promise.resolve(answer(200, [0, {channel: 'a', pub: {offset: 1}}])); }}});
    h._connMessage = (conn, obj) => { if (moves && obj.pub) h._pollMoved = true; };
    const c = new LongPollConn(h, {});
    c.connected = true;
    c.restartPoll();
    h.clock.tick(5);
    for (let i = 0; i < 20; i++) { await flush(); h.clock.tick(100); }
    if (moves) assert.equal(n, 41, 'answers that delivered something are followed at once');
    else assert.ok(n >= 3 && n <= 6, `${n} polls in 2 s of answers that moved nothing`);
    c.close();
  }
});

test('sse: a refusal whose body never ends is read for its first 4 KB only, then cancelled', async () => {
  let pulled = 0, cancelled = false;
  const body = new ReadableStream({
    pull: c => { pulled++; c.enqueue(new TextEncoder().encode('x'.repeat(1024))); },
    cancel: () => { cancelled = true; },
  });
  const h = host({env: {fetch: () => Promise.resolve({status: 503, body, text: () => new Promise(() => {})})}});
  new SseConn(h, {}).open();
  for (let i = 0; i < 20 && !h.closed.length; i++) await flush();
  assert.match(h.closed[0][1], /^cannot open: HTTP 503 x+$/);
  assert.ok(cancelled, 'the body was cancelled');
  assert.ok(pulled <= 8, `${pulled} KB read`);
});
