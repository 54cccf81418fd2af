// The lifecycle bugs of issue 15, one test (or more) each, plus the state
// machine's transitions. Fake timers and a fake server (fakes.mjs): every
// wait is on a condition with a bound in fake time.
//
//   node --test clients/js/test/*.test.mjs
//   SB_CLIENT=/tmp/old-switchboard.js node --test clients/js/test/*.test.mjs   (the tests against another version)

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {FakeServer, loadClient, advance, until, flush, sentCommands} from './fakes.mjs';

async function setup(t, opts = {}) {
  const server = new FakeServer();
  const env = server.install();
  const mod = await loadClient();
  const sb = new mod.Switchboard('http://127.0.0.1:9', {env, minReconnectDelay: 100, maxReconnectDelay: 2000, ...opts});
  const states = [];
  sb.on('state', s => states.push(s.state));
  t.after(() => { try { sb.close(); } catch (e) { /* destroyed */ } server.uninstall(); });
  return {server, env, sb, mod, states};
}

async function connected(sb, what = 'connected') {
  await until(() => sb.state === 'connected', 30000, what);
}

// -- bug 1 ----------------------------------------------------------------------

test('bug 1: close() from a state listener on disconnect is not undone', async t => {
  const {server, sb} = await setup(t);
  sb.connect();
  await connected(sb);
  sb.on('state', ({state}) => { if (state === 'disconnected') sb.close(); });
  server.sockets[0].serverClose(3000, 'normal');
  await advance(10000);
  assert.equal(sb.state, 'closed');
  assert.equal(server.sockets.length, 1, 'no reconnect after close()');
});

test('bug 1: close() from a disconnected listener is not undone', async t => {
  const {server, sb} = await setup(t);
  sb.connect();
  await connected(sb);
  const events = [];
  sb.on('disconnected', d => { events.push(d.reconnect); if (d.reconnect) sb.close(); });
  server.sockets[0].serverClose(3000, 'normal');
  await advance(10000);
  assert.equal(sb.state, 'closed');
  assert.equal(server.sockets.length, 1, 'no reconnect after close()');
  assert.deepEqual(events, [true, false]);
});

// -- bug 2 ----------------------------------------------------------------------

test('bug 2: close() from a connected listener leaves no subscription subscribed and no watchdog', async t => {
  const {server, sb} = await setup(t);
  const sub = sb.subscribe('a');
  let subscribed = 0;
  sub.on('subscribed', () => subscribed++);
  sb.on('connected', () => sb.close());
  sb.connect();
  await until(() => sb.state === 'closed', 5000, 'closed');
  await advance(60000);
  assert.equal(sb.state, 'closed');
  assert.notEqual(sub.state, 'subscribed');
  assert.equal(subscribed, 0);
  assert.equal(server.sockets.length, 1);
});

// -- bug 3 ----------------------------------------------------------------------

test('bug 3: unsubscribe() while connecting leaves the server unsubscribed; subscribing again works', async t => {
  const {server, sb} = await setup(t);
  const sub = sb.subscribe('a');
  sb.connect();
  sub.unsubscribe();
  await connected(sb);
  await until(() => !server.liveSessions()[0].subs.has('a'), 5000, 'server unsubscribed');
  const again = sb.subscribe('a');
  const errors = [];
  again.on('error', e => errors.push(e.code));
  await until(() => again.state === 'subscribed', 5000, 'subscribed again');
  assert.deepEqual(errors, []);
  const got = [];
  again.on('publication', p => got.push(p.data));
  server.publish('a', 'x');
  server.publish('a', 'y');
  await until(() => got.length === 2, 5000, 'publications');
  await advance(100);
  assert.deepEqual(got, ['x', 'y']);
  assert.equal(server.liveSessions().length, 1);
});

test('bug 3: unsubscribe and subscribe again while connecting: unsubscribe goes before the new subscribe', async t => {
  const {server, sb} = await setup(t);
  const sub = sb.subscribe('a');
  sb.connect();
  sub.unsubscribe();
  const again = sb.subscribe('a');
  await until(() => again.state === 'subscribed', 5000, 'subscribed');
  assert.ok(server.liveSessions()[0].subs.has('a'));
});

// -- bug 4 ----------------------------------------------------------------------

test('bug 4: a subscribe that times out is not ignored: the connection is remade and the subscription made', async t => {
  const {server, sb} = await setup(t, {requestTimeout: 2000});
  sb.connect();
  await connected(sb);
  server.hold.add('subscribe');
  const sub = sb.subscribe('a');
  await advance(2100);
  server.hold.clear();
  await until(() => sub.state === 'subscribed', 10000, 'subscribed after the timeout');
  assert.ok(server.sockets.length >= 2, 'the connection was remade');
});

test('bug 4: pushes held before a subscribe reply are bounded', async t => {
  const {server, sb} = await setup(t, {requestTimeout: 60000});
  sb.connect();
  await connected(sb);
  server.hold.add('subscribe');
  const sub = sb.subscribe('a');
  await flush();
  const session = server.liveSessions()[0];
  session.subs.add('a');  // the node subscribed but its reply is lost
  for (let i = 0; i < 6000; i++) server.publish('a', i);
  await flush(20);
  server.hold.clear();
  await until(() => sub.state === 'subscribed', 20000, 'subscribed on a new connection');
  assert.ok(server.sockets.length >= 2, 'the connection was remade');
  assert.ok(sub._buffer === undefined || sub._buffer.length <= 5000);
});

// -- bug 5 ----------------------------------------------------------------------

test('bug 5: queued commands go in bodies under the limit (SSE): no 413, subscribes included', async t => {
  const {server, sb} = await setup(t, {transports: ['sse']});
  sb.connect();
  await connected(sb);
  const big = 'x'.repeat(20000);
  const pubs = [1, 2, 3, 4, 5].map(i => sb.publish('p', big + i));
  const sub = sb.subscribe('b');
  const results = await Promise.allSettled(pubs);
  await until(() => sub.state !== 'subscribing', 10000, 'subscribe answered');
  assert.deepEqual(results.map(r => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
  assert.equal(sub.state, 'subscribed');
});

test('bug 5: requests queued while disconnected are split into frames under the limit (WebSocket)', async t => {
  const {server, sb} = await setup(t);
  const big = 'y'.repeat(30000);
  const pubs = [1, 2, 3].map(i => sb.publish('p', big + i));
  sb.connect();
  const results = await Promise.allSettled(pubs);
  assert.deepEqual(results.map(r => r.status), ['fulfilled', 'fulfilled', 'fulfilled']);
  for (const text of server.sockets[0].sent) assert.ok(Buffer.byteLength(text) <= 65536);
});

// -- bug 6 ----------------------------------------------------------------------

test('bug 6: temporary subscribe errors back off', async t => {
  const {server, sb} = await setup(t, {minReconnectDelay: 500, maxReconnectDelay: 20000});
  sb.connect();
  await connected(sb);
  for (let i = 0; i < 100; i++) server.subscribeErrors.push([100, 'internal error', true]);
  sb.subscribe('a');
  await advance(15000, 25);
  const n = server.log.filter(e => e.cmd.subscribe).length;
  // Fixed 0.5-1 s retries would make 15-30 attempts; doubling from 0.25-0.5 s makes at most 7.
  assert.ok(n <= 7, 'subscribe attempts in 15 s: ' + n);
  assert.ok(n >= 3, 'it does retry: ' + n);
});

// -- bug 7 ----------------------------------------------------------------------

test('bug 7: unrecovered fires before held publications reach the app', async t => {
  const {server, sb} = await setup(t);
  const sub = sb.subscribe('a');
  const order = [];
  sub.on('publication', p => order.push('pub ' + p.offset));
  sub.on('unrecovered', () => order.push('unrecovered'));
  sb.connect();
  await until(() => sub.state === 'subscribed', 5000, 'subscribed');
  server.publish('a', 1);
  server.publish('a', 2);
  await until(() => order.length === 2, 5000, 'two publications');
  // History lost on the node; on the resubscribe a live publication comes before the connect reply.
  const ch = server.channel('a');
  ch.epoch = 'e2'; ch.offset = 10; ch.pubs = [];
  server.onCommand = (session, cmd) => {
    if (cmd.connect) session.push({channel: 'a', pub: {offset: 11, data: 'live'}});
  };
  server.sockets[0].serverClose(3000, 'normal');
  await until(() => order.length === 4, 10000, 'unrecovered and the held publication');
  assert.deepEqual(order, ['pub 1', 'pub 2', 'unrecovered', 'pub 11']);
});

// -- bug 8 ----------------------------------------------------------------------

test('bug 8: a publish over the message limit is refused, the client stays connected', async t => {
  const {server, sb} = await setup(t);
  sb.connect();
  await connected(sb);
  await assert.rejects(sb.publish('a', 'z'.repeat(70000)), e => e.code === 'too_large');
  await advance(1000);
  assert.equal(sb.state, 'connected');
  assert.equal(server.sockets.length, 1);
  const r = await sb.publish('a', 'small');
  assert.equal(r.offset, 1);
});

test('bug 8: a 1009 close from the node is not final', async t => {
  const {server, sb} = await setup(t);
  sb.connect();
  await connected(sb);
  server.sockets[0].serverClose(1009, 'message too big');
  await until(() => server.sockets.length === 2 && sb.state === 'connected', 10000, 'reconnected');
});

// -- bug 9 ----------------------------------------------------------------------

test('bug 9: a long-poll whose body stalls ends the connection', async t => {
  const {server, sb} = await setup(t, {transports: ['longpoll'], pollTimeout: 1000});
  let stalled = 0;
  server.fetchHook = (url, init) => {
    if (!url.endsWith('/poll')) return undefined;
    const body = JSON.parse(init.body);
    if (body.timeout === 0) return undefined;
    stalled++;
    // Headers came; the body never does.
    return {status: 200, ok: true, text: () => new Promise(() => {}), json: () => new Promise(() => {})};
  };
  const disconnects = [];
  sb.on('disconnected', d => disconnects.push(d.reason));
  sb.subscribe('a');
  sb.connect();
  await connected(sb);
  await until(() => disconnects.length >= 1, 30000, 'the stalled poll to end the connection');
  assert.ok(stalled >= 1);
});

// -- bug 10 ---------------------------------------------------------------------

test('bug 10: after a fallback the client climbs back to WebSocket', async t => {
  const {server, sb} = await setup(t);
  server.ping = 0;
  server.refuseWs = true;
  sb.connect();
  await connected(sb);
  assert.equal(sb.transport, 'sse');
  server.refuseWs = false;
  await until(() => sb.transport === 'websocket' && sb.state === 'connected', 200000, 'back on websocket');
});

test('bug 10: offline ends the connection at once, online reconnects at once without falling back', async t => {
  const {server, sb, states} = await setup(t);
  const transports = [];
  sb.on('state', s => transports.push(s.transport));
  sb.connect();
  await connected(sb);
  server.navigator.onLine = false;
  server.fire('offline');
  await flush();
  assert.equal(sb.state, 'disconnected');
  server.refuseWs = true;  // nothing works while offline
  await advance(30000, 50);
  assert.ok(!transports.includes('sse') && !transports.includes('longpoll'), 'no fallback while offline: ' + transports);
  server.refuseWs = false;
  server.navigator.onLine = true;
  const before = server.sockets.length;
  server.fire('online');
  await flush(20);
  assert.ok(server.sockets.length > before, 'reconnecting at once');
  await until(() => sb.state === 'connected', 1000, 'connected');
  assert.equal(sb.transport, 'websocket');
  assert.ok(states.includes('connected'));
});

test('bug 10: destroy() removes the window listeners', async t => {
  const {server, sb} = await setup(t);
  sb.connect();
  await connected(sb);
  sb.destroy();
  const n = server.sockets.length;
  server.fire('online');
  server.fire('pageshow', {persisted: true});
  await advance(5000);
  assert.equal(server.sockets.length, n);
  assert.equal(sb.state, 'closed');
  assert.throws(() => sb.connect(), e => e.code === 'destroyed');
});

// -- the state machine ---------------------------------------------------------------

test('states: disconnected -> connecting -> connected -> disconnected -> connecting -> connected', async t => {
  const {server, sb, states} = await setup(t);
  assert.equal(sb.state, 'disconnected');
  sb.connect();
  await connected(sb);
  server.sockets[0].serverClose(3000, 'normal');
  await until(() => server.sockets.length === 2 && sb.state === 'connected', 10000, 'reconnected');
  assert.deepEqual(states, ['connecting', 'connected', 'disconnected', 'connecting', 'connected']);
});

test('states: a terminal code closes; connect() starts again', async t => {
  const {server, sb, states} = await setup(t);
  sb.connect();
  await connected(sb);
  const d = [];
  sb.on('disconnected', x => d.push([x.code, x.reconnect]));
  server.sockets[0].serverClose(3502, 'forced');
  await until(() => sb.state === 'closed', 1000, 'closed');
  await advance(10000);
  assert.equal(server.sockets.length, 1);
  assert.deepEqual(d, [[3502, false]]);
  sb.connect();
  await connected(sb);
  assert.deepEqual(states, ['connecting', 'connected', 'closed', 'connecting', 'connected']);
});

test('states: a disconnect push with reconnect false closes', async t => {
  const {server, sb} = await setup(t);
  sb.connect();
  await connected(sb);
  server.liveSessions()[0].push({disconnect: {code: 3000, reason: 'bye', reconnect: false}});
  await until(() => sb.state === 'closed', 1000, 'closed');
});

test('states: close() while connecting, then connect()', async t => {
  const {sb, states} = await setup(t);
  sb.connect();
  sb.close();
  await advance(5000);
  assert.equal(sb.state, 'closed');
  sb.connect();
  await connected(sb);
  assert.deepEqual(states, ['connecting', 'closed', 'connecting', 'connected']);
});

test('states: no connect reply within connectTimeout: the attempt fails, the client tries again', async t => {
  const {server, sb} = await setup(t, {connectTimeout: 1000, transports: ['websocket']});
  server.hold.add('connect');
  sb.connect();
  await advance(1100);
  assert.notEqual(sb.state, 'connected');
  server.hold.clear();
  await until(() => sb.state === 'connected', 10000, 'connected on a later attempt');
  assert.ok(server.sockets.length >= 2);
});

test('states: falls back websocket -> sse -> longpoll when each cannot open', async t => {
  const {server, sb} = await setup(t);
  server.refuseWs = true;
  server.refuseSse = true;
  sb.connect();
  await connected(sb);
  assert.equal(sb.transport, 'longpoll');
});

test('states: a quiet connection (no ping within ping + 5 s) is remade', async t => {
  const {server, sb} = await setup(t);
  server.ping = 2;
  sb.connect();
  await connected(sb);
  // The server sends nothing at all from now on.
  await until(() => server.sockets.length === 2, 10000, 'a new connection');
});

test('states: pending requests are resent after a reconnect and land once', async t => {
  const {server, sb} = await setup(t);
  sb.connect();
  await connected(sb);
  server.hold.add('publish');
  const p = sb.publish('a', 'once');
  await flush();
  server.hold.clear();
  server.sockets[0].serverClose(3000, 'normal');
  let r = null;
  p.then(x => { r = x; });
  await until(() => r !== null, 10000, 'the publish to land');
  assert.equal(r.offset, 1);
  const sent = sentCommands(server.sockets[1]).filter(c => c.publish);
  assert.equal(sent.length, 1);
  assert.equal(sent[0].publish.idempotencyKey, sentCommands(server.sockets[0]).find(c => c.publish).publish.idempotencyKey);
});

// -- close() from inside every listener --------------------------------------------

for (const transport of ['websocket', 'sse', 'longpoll']) {
  for (const ev of ['state', 'connected', 'disconnected', 'subscribing', 'subscribed', 'publication', 'unrecovered']) {
    test(`close() from a ${ev} listener (${transport}) is final: no event, request or connection after it`, async t => {
      const {server, sb} = await setup(t, {transports: [transport], pollTimeout: 2000});
      server.ping = 0;
      const sub = sb.subscribe('a');
      sb.connect();
      await until(() => sub.state === 'subscribed', 10000, 'subscribed');
      server.publish('a', 1);
      await until(() => sub.position && sub.position.offset === 1, 10000, 'the first publication');
      let closedAt = null;
      const after = [];
      // Recorders first: the emission that runs the closing listener is not "after".
      for (const e of ['state', 'connected']) sb.on(e, x => { if (closedAt !== null && sb.state !== 'closed') after.push(e); });
      for (const e of ['subscribed', 'publication']) sub.on(e, () => { if (closedAt !== null) after.push(e); });
      const target = ['subscribing', 'subscribed', 'publication', 'unrecovered'].includes(ev) ? sub : sb;
      target.on(ev, () => { if (closedAt === null) { sb.close(); closedAt = server.log.length; } });
      // Provoke every event: history lost (unrecovered on the resubscribe), a publication, a dropped connection.
      const ch = server.channel('a');
      server.publish('a', 2);
      await advance(200);
      ch.epoch = 'e2'; ch.offset = 50; ch.pubs = [];
      if (transport === 'websocket') server.sockets[server.sockets.length - 1].serverClose(3000, 'normal');
      else if (transport === 'sse') server.eventSources[server.eventSources.length - 1].serverEnd();
      else {
        // Long-polling: one poll fails (the connection is over), the next sees the new epoch.
        let failed = false;
        server.fetchHook = url => {
          if (url.endsWith('/poll') && !failed) { failed = true; return Promise.reject(new Error('network down')); }
          return undefined;
        };
        server.publish('a', 3);
      }
      await until(() => closedAt !== null, 20000, `a ${ev} event`);
      const sockets = (server.sockets || []).length, streams = (server.eventSources || []).length;
      await advance(30000, 100);
      assert.equal(sb.state, 'closed');
      assert.deepEqual(after, [], 'events after close()');
      assert.equal((server.sockets || []).length, sockets, 'no new WebSocket');
      assert.equal((server.eventSources || []).length, streams, 'no new SSE stream');
      assert.notEqual(sub.state, 'subscribed');
    });
  }
}

// -- found against a real node (IntegrationTests/browser/test_browser_client_recovery.py) -------

test('long-polling: an unsubscribe 2500 in a poll answer resubscribes from the position (unrecovered), not the end', async t => {
  const {server, sb} = await setup(t, {transports: ['longpoll'], pollTimeout: 5000});
  const events = [], pubs = [], unrecovered = [];
  const sub = sb.subscribe('a', {
    onPublication: p => pubs.push(p.data),
    onUnrecovered: u => unrecovered.push(u),
  });
  for (const ev of ['subscribing', 'subscribed', 'unsubscribed']) sub.on(ev, x => events.push(ev + (x && x.code !== undefined ? ':' + x.code : '')));
  sb.connect();
  await connected(sb);
  await until(() => sub.state === 'subscribed', 30000, 'subscribed');
  server.publish('a', 'one');
  await until(() => pubs.length === 1, 30000, 'the first publication');
  // The node lost the channel's state (a new epoch): the held poll is answered with 2500.
  let told = false;
  server.fetchHook = (url) => {
    if (told || !url.endsWith('/poll')) return undefined;
    told = true;
    const text = JSON.stringify([{channel: 'a', unsubscribe: {code: 2500, reason: 'insufficient state'}}]);
    return {status: 200, ok: true, text: async () => text, json: async () => JSON.parse(text)};
  };
  const ch = server.channel('a');
  ch.epoch = 'e2'; ch.offset = 0; ch.pubs = [];
  server.publish('a', 'lost');  // wakes the held poll, which the hook answers with 2500
  await until(() => unrecovered.length === 1, 30000, 'unrecovered');
  assert.notEqual(sub.state, 'unsubscribed', `ended by 2500: ${events}`);
  assert.ok(events.includes('subscribing:2500'), `no subscribing 2500: ${events}`);
  await until(() => sub.state === 'subscribed', 30000, 'subscribed again');
  server.publish('a', 'two');
  await until(() => pubs.includes('two'), 30000, 'a publication in the new epoch');
  assert.deepEqual(pubs, ['one', 'two']);
  assert.equal(sub.position.epoch, 'e2');
});
