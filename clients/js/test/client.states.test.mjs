// src/client.js: every transition of the connection state machine, one test
// each, with the exact sequence of states and `disconnected` events. Fake
// timers and the fake server of fakes.mjs; the module itself, not the bundle.
//
//   disconnected --connect()--> connecting --connect reply--> connected
//   connecting --attempt fails / connectTimeout / getToken fails--> disconnected --timer--> connecting
//   connected --connection lost / watchdog / offline / pagehide--> disconnected
//   disconnected --online / pageshow / visible / connect()--> connecting (at once)
//   connected --WebSocket works again (after a fallback)--> connecting
//   connecting/connected --terminal code, reconnect: false, no token--> closed
//   disconnected/connecting/connected --close()--> closed --connect()--> connecting
//   any --destroy()--> closed for good (connect() throws)
//
// The same transitions on the pure ConnectionMachine, without timers or
// sockets: connection.test.mjs.

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {FakeServer, advance, until, flush} from './fakes.mjs';
import {Switchboard} from '../src/client.js';

async function setup(t, opts = {}, prepare = () => {}) {
  const server = new FakeServer();
  const env = server.install();
  prepare(server, env);
  const sb = new Switchboard('http://127.0.0.1:9', {env, minReconnectDelay: 100, maxReconnectDelay: 2000, ...opts});
  const states = [];
  const disconnects = [];
  sb.on('state', s => states.push(s.state));
  sb.on('disconnected', d => disconnects.push([d.code, d.reconnect]));
  t.after(() => { try { sb.close(); } catch (e) { /* destroyed */ } server.uninstall(); });
  return {server, env, sb, states, disconnects};
}

const isConnected = sb => () => sb.state === 'connected';

async function connectedOnce(sb, states) {
  sb.connect();
  await until(isConnected(sb), 30000, 'connected');
  assert.deepEqual(states, ['connecting', 'connected']);
  states.length = 0;
}

test('disconnected -> connecting -> connected: connect() and the connect reply', async t => {
  const {sb, states} = await setup(t);
  assert.equal(sb.state, 'disconnected');
  sb.connect();
  assert.equal(sb.state, 'connecting', 'connect() moves to connecting at once');
  await until(isConnected(sb), 30000, 'connected');
  assert.deepEqual(states, ['connecting', 'connected']);
  assert.equal(sb.transport, 'websocket');
});

test('connect() while connecting or connected is a no-op', async t => {
  const {server, sb, states} = await setup(t);
  sb.connect();
  sb.connect();
  await until(isConnected(sb), 30000, 'connected');
  sb.connect();
  await advance(1000);
  assert.deepEqual(states, ['connecting', 'connected']);
  assert.equal(server.sockets.length, 1);
});

test('connecting -> disconnected -> connecting: an attempt that fails waits for the backoff, on the same transport', async t => {
  const {server, sb, states, disconnects} = await setup(t, {transports: ['websocket']}, s => { s.refuseWs = true; });
  sb.connect();
  await until(() => states.length >= 2, 1000, 'the attempt failed');
  assert.deepEqual(states, ['connecting', 'disconnected']);
  assert.deepEqual(disconnects, [[1006, true]]);
  assert.equal(server.sockets.length, 1, 'no new attempt before the backoff');
  server.refuseWs = false;
  await until(isConnected(sb), 5000, 'connected after the backoff');
  assert.deepEqual(states, ['connecting', 'disconnected', 'connecting', 'connected']);
  assert.equal(server.sockets.length, 2);
});

test('connecting -> disconnected: no connect reply within connectTimeout', async t => {
  const {server, sb, states, disconnects} = await setup(t, {connectTimeout: 3000}, s => { s.hold.add('connect'); });
  sb.connect();
  await advance(2900);
  assert.deepEqual(states, ['connecting'], 'still connecting before the deadline');
  await until(() => states.length >= 2, 1000, 'the attempt timed out');
  assert.deepEqual(states, ['connecting', 'disconnected']);
  assert.equal(disconnects[0][1], true);
  server.hold.clear();
  await until(isConnected(sb), 30000, 'connected on a later attempt');
});

test('connecting (getToken) -> disconnected: getToken() rejecting is retried after the backoff', async t => {
  let calls = 0;
  const getToken = () => (++calls === 1 ? Promise.reject(new Error('auth down')) : Promise.resolve('tok'));
  const {sb, states} = await setup(t, {getToken});
  const errors = [];
  sb.on('error', e => errors.push(e.code));
  sb.connect();
  assert.equal(sb.state, 'connecting', 'connecting while getToken() runs');
  await until(isConnected(sb), 30000, 'connected with the second token');
  assert.deepEqual(states, ['connecting', 'disconnected', 'connecting', 'connected']);
  assert.equal(calls, 2);
  assert.deepEqual(errors, ['transport']);
});

test('connecting -> closed: getToken() gives no token (3500)', async t => {
  const {sb, states, disconnects} = await setup(t, {getToken: () => ''});
  sb.connect();
  await until(() => sb.state === 'closed', 1000, 'closed');
  assert.deepEqual(states, ['connecting', 'closed']);
  assert.deepEqual(disconnects, [[3500, false]]);
});

test('connecting -> closed: a terminal close code before the connect reply', async t => {
  const {server, sb, states, disconnects} = await setup(t, {}, s => { s.hold.add('connect'); });
  sb.connect();
  await until(() => server.sockets.length === 1 && server.sockets[0].readyState === 1, 1000, 'socket open');
  server.sockets[0].serverClose(3500, 'invalid token');
  await until(() => sb.state === 'closed', 1000, 'closed');
  await advance(5000);
  assert.deepEqual(states, ['connecting', 'closed']);
  assert.deepEqual(disconnects, [[3500, false]]);
  assert.equal(server.sockets.length, 1, 'no reconnect');
});

test('connected -> disconnected -> connecting -> connected: the connection is lost', async t => {
  const {server, sb, states, disconnects} = await setup(t);
  await connectedOnce(sb, states);
  server.sockets[0].serverClose(3000, 'going away');
  await until(isConnected(sb), 30000, 'reconnected');
  assert.deepEqual(states, ['disconnected', 'connecting', 'connected']);
  assert.deepEqual(disconnects, [[3000, true]]);
});

test('connected -> disconnected: the watchdog ends a connection quiet for ping + 5 s', async t => {
  const {server, sb, states} = await setup(t, {}, s => { s.ping = 2; });
  await connectedOnce(sb, states);
  server.sockets[0].session.closed = true;  // the server goes silent, the socket stays open
  await advance(6900);
  assert.deepEqual(states, [], 'nothing before ping + 5 s');
  await until(() => states.length >= 1, 1000, 'watchdog fired');
  assert.equal(states[0], 'disconnected');
  await until(isConnected(sb), 30000, 'reconnected');
});

test('connected: with a server that sends no pings (ping 0), the client pings after idlePing; answered, the connection stays; silent, it ends idlePing + 5 s after the last message', async t => {
  const {server, env, sb, states} = await setup(t, {idlePing: 3000}, s => { s.ping = 0; });
  let lastPingAt = 0;
  server.onCommand = (session, cmd) => { if (cmd.ping !== undefined) lastPingAt = env.now(); };
  await connectedOnce(sb, states);
  const pings = () => server.log.filter(e => e.cmd.ping !== undefined).length;
  await advance(3100);
  await until(() => pings() === 1, 1000, 'a ping after 3 s of silence');
  await advance(20000);  // each answer is new activity: a ping per 3 s of silence, the connection kept
  assert.deepEqual(states, [], 'answered pings keep the connection');
  assert.ok(pings() >= 5, `${pings()} pings in 23 s`);
  server.sockets[0].session.closed = true;  // the server goes silent, the socket stays open
  // The last answer came with the last ping: the end is due 8 s after it, not before.
  await advance(lastPingAt + 7900 - env.now());
  assert.deepEqual(states, [], 'nothing before idlePing + 5 s after the last message');
  await advance(600);
  await until(() => states.length >= 1, 1000, 'watchdog fired');
  assert.equal(states[0], 'disconnected');
});

test('connected -> closed: a terminal close code (no reconnect)', async t => {
  const {server, sb, states, disconnects} = await setup(t);
  await connectedOnce(sb, states);
  server.sockets[0].serverClose(3502, 'forced');
  await until(() => sb.state === 'closed', 1000, 'closed');
  await advance(5000);
  assert.deepEqual(states, ['closed']);
  assert.deepEqual(disconnects, [[3502, false]]);
  assert.equal(server.sockets.length, 1);
});

test('connected -> closed: a disconnect push with reconnect: false', async t => {
  const {server, sb, states, disconnects} = await setup(t);
  await connectedOnce(sb, states);
  server.sockets[0].session.push({disconnect: {code: 3000, reason: 'bye', reconnect: false}});
  await until(() => sb.state === 'closed', 1000, 'closed');
  assert.deepEqual(states, ['closed']);
  assert.deepEqual(disconnects, [[3000, false]]);
});

test('connected -> closed -> connecting -> connected: close() then connect()', async t => {
  const {server, sb, states, disconnects} = await setup(t);
  await connectedOnce(sb, states);
  sb.close();
  assert.deepEqual(states, ['closed']);
  assert.deepEqual(disconnects, [[0, false]]);
  await advance(5000);
  assert.equal(server.sockets.length, 1, 'no reconnect after close()');
  sb.connect();
  await until(isConnected(sb), 30000, 'connected again');
  assert.deepEqual(states, ['closed', 'connecting', 'connected']);
});

test('connecting -> closed: close() while connecting', async t => {
  const {server, sb, states} = await setup(t, {}, s => { s.hold.add('connect'); });
  sb.connect();
  await flush();
  sb.close();
  await advance(15000);
  assert.deepEqual(states, ['connecting', 'closed']);
  assert.equal(server.sockets.length, 1);
});

test('disconnected -> closed: close() during the backoff cancels the reconnect', async t => {
  const {server, sb, states} = await setup(t, {minReconnectDelay: 1000, maxReconnectDelay: 1000});
  await connectedOnce(sb, states);
  server.sockets[0].serverClose(3000, 'x');
  await until(() => sb.state === 'disconnected', 1000, 'disconnected');
  sb.close();
  await advance(5000);
  assert.deepEqual(states, ['disconnected', 'closed']);
  assert.equal(server.sockets.length, 1);
});

test('disconnected -> connecting: connect() during the backoff reconnects at once', async t => {
  const {server, sb, states} = await setup(t, {minReconnectDelay: 10000, maxReconnectDelay: 10000});
  await connectedOnce(sb, states);
  server.sockets[0].serverClose(3000, 'x');
  await until(() => sb.state === 'disconnected', 1000, 'disconnected');
  sb.connect();
  assert.equal(sb.state, 'connecting');
  await until(isConnected(sb), 1000, 'connected well before the 10 s backoff');
  assert.deepEqual(states, ['disconnected', 'connecting', 'connected']);
});

test('connected -> disconnected (offline) -> connecting (online), same transport, no fallback', async t => {
  const {server, sb, states, disconnects} = await setup(t, {minReconnectDelay: 100, maxReconnectDelay: 100000});
  await connectedOnce(sb, states);
  server.navigator.onLine = false;
  server.fire('offline');
  assert.equal(sb.state, 'disconnected', 'offline ends the connection at once');
  assert.deepEqual(disconnects, [[0, true]]);
  await advance(20000);
  assert.deepEqual(states, ['disconnected'], 'no attempt while offline');
  server.navigator.onLine = true;
  server.fire('online');
  assert.equal(sb.state, 'connecting', 'online reconnects at once');
  await until(isConnected(sb), 1000, 'connected');
  assert.equal(sb.transport, 'websocket');
  assert.deepEqual(states, ['disconnected', 'connecting', 'connected']);
});

test('connected -> disconnected (pagehide into the bfcache) -> connecting (pageshow persisted)', async t => {
  const {sb, server, states} = await setup(t);
  await connectedOnce(sb, states);
  server.fire('pagehide', {persisted: false});
  assert.equal(sb.state, 'connected', 'a pagehide that does not cache the page changes nothing');
  server.fire('pagehide', {persisted: true});
  assert.equal(sb.state, 'disconnected');
  await advance(30000);
  assert.deepEqual(states, ['disconnected'], 'no attempt while cached');
  server.fire('pageshow', {persisted: true});
  await until(isConnected(sb), 1000, 'connected');
  assert.deepEqual(states, ['disconnected', 'connecting', 'connected']);
});

test('disconnected -> connecting: visibilitychange to visible cuts the backoff short', async t => {
  const {server, sb, states} = await setup(t, {minReconnectDelay: 20000, maxReconnectDelay: 20000});
  await connectedOnce(sb, states);
  server.sockets[0].serverClose(3000, 'x');
  await until(() => sb.state === 'disconnected', 1000, 'disconnected');
  server.document.visibilityState = 'hidden';
  server.fire('visibilitychange');
  assert.equal(sb.state, 'disconnected', 'hidden: no change');
  server.document.visibilityState = 'visible';
  server.fire('visibilitychange');
  assert.equal(sb.state, 'connecting');
  await until(isConnected(sb), 1000, 'connected');
});

test('connected (fallback) -> connecting -> connected: WebSocket works again', async t => {
  const {server, sb, states} = await setup(t, {transports: ['websocket', 'longpoll'], upgradeInterval: 10000},
    s => { s.refuseWs = true; });
  sb.connect();
  await until(isConnected(sb), 30000, 'connected over long-polling');
  assert.equal(sb.transport, 'longpoll');
  assert.deepEqual(states, ['connecting', 'disconnected', 'connecting', 'connected'], 'WebSocket refused, long-polling at once');
  states.length = 0;
  server.refuseWs = false;
  await until(() => sb.state === 'connected' && sb.transport === 'websocket', 20000, 'back on WebSocket');
  assert.deepEqual(states, ['connecting', 'connected'], 'straight from connected to connecting over WebSocket');
});

test('connected (fallback): a climb-back probe that never answers is cut at connectTimeout, and probing goes on', async t => {
  const {server, sb} = await setup(t, {transports: ['websocket', 'longpoll'], upgradeInterval: 10000, connectTimeout: 3000},
    s => { s.refuseWs = true; });
  sb.connect();
  await until(isConnected(sb), 30000, 'connected over long-polling');
  server.refuseWs = false;
  server.stallWs = true;
  const before = server.sockets.length;
  await until(() => server.sockets.length === before + 2, 40000, 'a second probe after the first one stalled');
  assert.equal(server.sockets[before].session, null, 'the stalled probe never opened');
  assert.equal(server.sockets[before].readyState, 3, 'the client closed the stalled probe');
  server.stallWs = false;
  await until(() => sb.state === 'connected' && sb.transport === 'websocket', 30000, 'back on WebSocket');
});

test('disconnected (offline, no online event) -> connected (fallback): the climb back to WebSocket still runs', async t => {
  // A connection lost while offline waits maxReconnectDelay (or `online`). When that timer reconnects and no
  // `online` event ever came, nothing of the offline wait may outlive it: with a Bool `_suspended` flag left
  // set, the probe for WebSocket was skipped for good.
  const {server, sb, states} = await setup(t, {transports: ['websocket', 'sse'], upgradeInterval: 10000, maxReconnectDelay: 2000},
    s => { s.refuseWs = true; });
  sb.connect();
  await until(isConnected(sb), 30000, 'connected over SSE');
  assert.equal(sb.transport, 'sse');
  server.navigator.onLine = false;
  server.eventSources[server.eventSources.length - 1].serverEnd();
  await until(() => sb.state === 'disconnected', 5000, 'disconnected');
  server.navigator.onLine = true;  // back, but no `online` event
  await until(isConnected(sb), 5000, 'reconnected over SSE by the maxReconnectDelay timer');
  assert.equal(sb.transport, 'sse');
  server.refuseWs = false;
  states.length = 0;
  await until(() => sb.state === 'connected' && sb.transport === 'websocket', 20000, 'back on WebSocket');
  assert.deepEqual(states, ['connecting', 'connected']);
});

test('any state -> closed for good: destroy()', async t => {
  for (const where of ['disconnected', 'connecting', 'connected']) {
    const {sb, server, states} = await setup(t, {}, s => { if (where === 'connecting') s.hold.add('connect'); });
    if (where !== 'disconnected') {
      sb.connect();
      if (where === 'connected') await until(isConnected(sb), 30000, 'connected');
      else await flush();
    }
    assert.equal(sb.state, where);
    sb.destroy();
    assert.equal(sb.state, 'closed', 'destroy() from ' + where);
    assert.throws(() => sb.connect(), e => e.code === 'destroyed');
    await advance(30000);
    assert.equal(sb.state, 'closed');
    assert.ok(server.sockets === undefined || server.sockets.length <= 1, 'no attempt after destroy()');
    states.length = 0;
    server.uninstall();
  }
});
