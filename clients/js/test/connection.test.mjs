// src/connection.js and src/ladder.js: the connection state machine and the
// transport ladder, pure (no timers, no sockets). Every transition of the
// diagram at the top of connection.js, with the action it returns:
//
//   idle --connect()--> connecting --connected()--> connected
//   connecting/connected --connectionLost()--> waiting --reconnectDue()/online()/visible()/connect()--> connecting
//   connecting/connected --connectionLost() offline--> suspended --online()/reconnectDue()--> connecting
//   connecting/connected/waiting/suspended --suspend()--> suspended --online()--> connecting
//   connected --climbBack()--> connecting
//   connecting/connected --connectionLost() terminal / reconnect: false--> closed
//   any but destroyed --close()--> closed --connect()--> connecting
//   any --destroy()--> destroyed
//
// random is fixed at 0.5, so the backoff (full jitter, min 100, max 2000)
// gives 50, 100, 200, ... and a probe waits exactly upgradeInterval.

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {ConnectionMachine} from '../src/connection.js';
import {TransportLadder} from '../src/ladder.js';

const ALL = ['websocket', 'sse', 'longpoll'];

function machine(o = {}) {
  return new ConnectionMachine({transports: ALL, minReconnectDelay: 100, maxReconnectDelay: 2000, upgradeInterval: 60000,
    random: () => 0.5, ...o});
}

// The lost-connection report of an attempt that never got a connect reply.
const failed = (transport, opened, extra = {}) => ({transport, opened, wasConnected: false, code: 0, reason: 'failed', online: true, ...extra});
// The lost-connection report of a connection that had its connect reply.
const dropped = (transport, extra = {}) => ({transport, opened: true, wasConnected: true, code: 3000, reason: 'lost', online: true, ...extra});

function connected(m = machine()) {
  m.connect();
  m.connected(m.transport);
  assert.equal(m.phase.name, 'connected');
  return m;
}

// A machine connected over SSE after WebSocket could not open.
function fellBackToSse(o = {}) {
  const m = machine(o);
  m.connect();
  assert.equal(m.connectionLost(failed('websocket', false)).fellBackTo, 'sse');
  assert.equal(m.reconnectDue().startAttempt, 'sse');
  return m;
}

// Every event, for checking that a phase ignores the ones it should.
const EVENTS = {
  connect: m => m.connect(), reconnectDue: m => m.reconnectDue(), tokenArrived: m => m.tokenArrived(),
  online: m => m.online(), visible: m => m.visible(), suspend: m => m.suspend('offline'),
  close: m => m.close('bye'), destroy: m => m.destroy(), connected: m => m.connected('websocket'),
  climbBack: m => m.climbBack(), connectionLost: m => m.connectionLost(dropped('websocket')),
};

test('a new machine: idle, public state disconnected, not active, epoch 0, first transport', () => {
  const m = machine();
  assert.equal(m.phase.name, 'idle');
  assert.equal(m.state, 'disconnected');
  assert.equal(m.active, false);
  assert.equal(m.destroyed, false);
  assert.equal(m.epoch, 0);
  assert.equal(m.transport, 'websocket');
});

test('idle --connect()--> connecting: start an attempt on the first transport, emit state', () => {
  const m = machine();
  assert.deepEqual(m.connect(), {startAttempt: 'websocket', emitState: true});
  assert.equal(m.state, 'connecting');
  assert.deepEqual(m.phase, {name: 'connecting', transport: 'websocket'});
  assert.equal(m.active, true);
  assert.equal(m.epoch, 1);
});

test('connect() while connecting or connected: nothing, no transition', () => {
  const m = machine();
  m.connect();
  assert.deepEqual(m.connect(), {});
  assert.equal(m.epoch, 1);
  m.connected('websocket');
  const e = m.epoch;
  assert.deepEqual(m.connect(), {});
  assert.equal(m.epoch, e);
  assert.equal(m.state, 'connected');
});

test('connecting --connected()--> connected: emit state, the transport counts as working, no probe on WebSocket', () => {
  const m = machine();
  m.connect();
  assert.deepEqual(m.connected('websocket'), {emitState: true, probeAfter: null});
  assert.deepEqual(m.phase, {name: 'connected', transport: 'websocket'});
  assert.ok(m.ladder.worked.has('websocket'));
  assert.equal(m.epoch, 2);
});

test('connected() outside connecting is ignored', () => {
  for (const setup of [m => m, m => { m.connect(); m.close('x'); return m; }, m => connected(m)]) {
    const m = setup(machine());
    const before = {phase: m.phase, epoch: m.epoch};
    assert.deepEqual(m.connected('sse'), {});
    assert.deepEqual({phase: m.phase, epoch: m.epoch}, before);
  }
});

test('tokenArrived(): connecting (getToken) --> connecting with the transport, no state event', () => {
  const m = machine();
  m.connect();
  assert.deepEqual(m.tokenArrived(), {startAttempt: 'websocket', emitState: false});
  assert.equal(m.epoch, 2, 'a transition: a getToken() that settles later is stale');
  assert.deepEqual(machine().tokenArrived(), {}, 'not while idle');
  assert.deepEqual(connected().tokenArrived(), {}, 'not while connected');
});

test('connected --connectionLost()--> waiting: reconnect after the backoff on the same transport, no failure counted', () => {
  const m = connected();
  const a = m.connectionLost(dropped('websocket', {code: 3000, reason: 'lost'}));
  assert.deepEqual(a, {scheduleReconnect: 50, code: 3000, reason: 'lost', emitState: true, fellBackTo: null});
  assert.equal(m.state, 'disconnected');
  assert.deepEqual(m.phase, {name: 'waiting', delayMs: 50, code: 3000, reason: 'lost'});
  assert.equal(m.active, true);
  assert.equal(m.transport, 'websocket');
  assert.equal(m.ladder.failuresInRow, 0);
  assert.equal(m.connectionLost(dropped('websocket')).scheduleReconnect === undefined, true, 'only once: now waiting');
});

test('waiting --reconnectDue()--> connecting; the backoff grows until a connection is stable', () => {
  const m = connected();
  const delays = [];
  for (let i = 0; i < 6; i++) {
    delays.push(m.connectionLost(dropped('websocket')).scheduleReconnect);
    assert.deepEqual(m.reconnectDue(), {startAttempt: 'websocket', emitState: true});
    assert.equal(m.state, 'connecting');
    m.connected('websocket');
  }
  assert.deepEqual(delays, [50, 100, 200, 400, 800, 1000]);
  m.stable();
  assert.equal(m.connectionLost(dropped('websocket')).scheduleReconnect, 50, 'stable() resets the backoff');
});

test('stable() resets the backoff only while connected', () => {
  const m = connected();
  m.connectionLost(dropped('websocket'));
  m.stable();  // waiting: ignored
  m.reconnectDue();
  m.connected('websocket');
  assert.equal(m.connectionLost(dropped('websocket')).scheduleReconnect, 100);
});

test('waiting --online()/visible()/connect()--> connecting at once, keeping the backoff', () => {
  for (const ev of ['online', 'visible', 'connect']) {
    const m = connected();
    m.connectionLost(dropped('websocket'));
    assert.deepEqual(m[ev](), {startAttempt: 'websocket', emitState: true}, ev);
    assert.equal(m.state, 'connecting', ev);
    assert.equal(m.backoff.attempt, 1, ev + ': not a fresh start');
  }
});

test('suspended --connect()--> connecting at once, keeping the backoff (not a fresh start)', () => {
  const m = connected();
  m.connectionLost(dropped('websocket'));
  m.reconnectDue();
  m.suspend('offline');
  assert.equal(m.backoff.attempt, 1);
  assert.deepEqual(m.connect(), {startAttempt: 'websocket', emitState: true});
  assert.equal(m.backoff.attempt, 1);
});

test('reconnectDue() and online() outside waiting/suspended are ignored', () => {
  for (const setup of [m => m, m => { m.connect(); return m; }, m => connected(m), m => { m.close('x'); return m; }]) {
    const m = setup(machine());
    const e = m.epoch;
    assert.deepEqual(m.reconnectDue(), {});
    assert.deepEqual(m.online(), {});
    assert.equal(m.epoch, e);
  }
});

test('visible() while connected asks for a quiet-connection check; idle/connecting: nothing', () => {
  assert.deepEqual(connected().visible(), {checkQuiet: true});
  assert.deepEqual(machine().visible(), {});
  const m = machine();
  m.connect();
  assert.deepEqual(m.visible(), {});
});

test('fallback: a transport that cannot open and never worked is left at once (delay 0)', () => {
  const m = machine();
  m.connect();
  const a = m.connectionLost(failed('websocket', false));
  assert.equal(a.scheduleReconnect, 0);
  assert.equal(a.fellBackTo, 'sse');
  assert.equal(m.transport, 'sse');
  assert.equal(m.state, 'disconnected');
  assert.deepEqual(m.reconnectDue(), {startAttempt: 'sse', emitState: true});
});

test('fallback through every transport; wrapping around to the first waits for the backoff', () => {
  const m = machine();
  m.connect();
  const seen = [];
  for (let i = 0; i < 3; i++) {
    const t = m.transport;
    const a = m.connectionLost(failed(t, false));
    seen.push([t, a.fellBackTo, a.scheduleReconnect]);
    m.reconnectDue();
  }
  assert.deepEqual(seen, [['websocket', 'sse', 0], ['sse', 'longpoll', 0], ['longpoll', 'websocket', 50]]);
});

test('fallback: an attempt that opened but got no connect reply falls back after two in a row', () => {
  const m = machine();
  m.connect();
  const a1 = m.connectionLost(failed('websocket', true));
  assert.equal(a1.fellBackTo, null);
  assert.equal(a1.scheduleReconnect, 50);
  assert.equal(m.ladder.failuresInRow, 1);
  m.reconnectDue();
  const a2 = m.connectionLost(failed('websocket', true));
  assert.equal(a2.fellBackTo, 'sse');
  assert.equal(a2.scheduleReconnect, 0);
  assert.equal(m.ladder.failuresInRow, 0);
});

test('fallback: a transport that worked before is not left after one failure to open', () => {
  const m = connected();
  m.connectionLost(dropped('websocket'));
  m.reconnectDue();
  assert.equal(m.connectionLost(failed('websocket', false)).fellBackTo, null);
  m.reconnectDue();
  assert.equal(m.connectionLost(failed('websocket', false)).fellBackTo, 'sse', 'the second in a row');
});

test('fallback: a connect reply in between starts the count over', () => {
  const m = machine();
  m.connect();
  m.connectionLost(failed('websocket', true));
  m.reconnectDue();
  m.connected('websocket');
  m.connectionLost(dropped('websocket'));
  m.reconnectDue();
  assert.equal(m.connectionLost(failed('websocket', true)).fellBackTo, null);
});

test('no fallback with a single transport', () => {
  const m = machine({transports: ['sse']});
  m.connect();
  for (let i = 0; i < 3; i++) {
    assert.equal(m.connectionLost(failed('sse', false)).fellBackTo, null);
    assert.equal(m.reconnectDue().startAttempt, 'sse');
  }
});

test('connecting --connectionLost() offline--> suspended: no fallback, no failure counted, waits maxReconnectDelay', () => {
  const m = machine();
  m.connect();
  for (let i = 0; i < 3; i++) {
    const a = m.connectionLost(failed('websocket', false, {online: false}));
    assert.equal(a.fellBackTo, null);
    assert.equal(a.scheduleReconnect, 2000);
    assert.equal(m.phase.name, 'suspended');
    assert.equal(m.state, 'disconnected');
    assert.equal(m.ladder.failuresInRow, 0);
    assert.deepEqual(m.reconnectDue(), {startAttempt: 'websocket', emitState: true}, 'the timer, should online never come');
  }
  assert.equal(m.transport, 'websocket');
});

test('suspended: visible() does not cut it short, online() does', () => {
  const m = connected();
  m.connectionLost(dropped('websocket', {online: false}));
  assert.deepEqual(m.visible(), {});
  assert.equal(m.phase.name, 'suspended');
  assert.deepEqual(m.online(), {startAttempt: 'websocket', emitState: true});
});

test('connected --suspend()--> suspended --online()--> connecting, same transport, no failure counted', () => {
  const m = fellBackToSse();
  m.connected('sse');
  const e = m.epoch;
  assert.deepEqual(m.suspend('browser offline'), {suspend: 'browser offline', emitState: true});
  assert.deepEqual(m.phase, {name: 'suspended', reason: 'browser offline', delayMs: null});
  assert.equal(m.state, 'disconnected');
  assert.equal(m.epoch, e + 1);
  assert.equal(m.ladder.failuresInRow, 0);
  assert.deepEqual(m.online(), {startAttempt: 'sse', emitState: true});
});

test('suspend() from connecting, waiting and suspended; not when not active', () => {
  const connecting = machine();
  connecting.connect();
  assert.deepEqual(connecting.suspend('x'), {suspend: 'x', emitState: true});
  const waiting = connected();
  waiting.connectionLost(dropped('websocket'));
  assert.deepEqual(waiting.suspend('x'), {suspend: 'x', emitState: false}, 'already disconnected: no state event');
  assert.equal(waiting.phase.delayMs, null, 'the reconnect timer is no longer wanted');
  assert.deepEqual(waiting.suspend('y'), {suspend: 'y', emitState: false});
  const idle = machine();
  assert.deepEqual(idle.suspend('x'), {});
  assert.equal(idle.epoch, 0);
  const closed = connected();
  closed.close('bye');
  assert.deepEqual(closed.suspend('x'), {});
  assert.equal(closed.state, 'closed');
});

test('suspended does not outlive the disconnect: connected again after it, the climb back is scheduled', () => {
  // (with a Bool `_suspended` flag, one left set by an offline reconnect blocked the probe for good)
  const m = fellBackToSse();
  m.connected('sse');
  m.connectionLost(dropped('sse', {online: false}));
  assert.equal(m.phase.name, 'suspended');
  m.reconnectDue();  // the maxReconnectDelay timer, not `online`
  assert.equal(m.connected('sse').probeAfter, 60000);
});

test('climb back: connected over a fallback probes after upgradeInterval (±25 %)', () => {
  const m = fellBackToSse();
  assert.deepEqual(m.connected('sse'), {emitState: true, probeAfter: 60000});
  for (const [r, want] of [[0, 45000], [1, 75000]]) {
    const k = fellBackToSse({random: () => r});
    assert.equal(k.connected('sse').probeAfter, want);
  }
  assert.equal(m.nextProbe('sse'), 60000, 'again after a probe that failed');
});

test('climb back: connected --climbBack()--> connecting on WebSocket', () => {
  const m = fellBackToSse();
  m.connected('sse');
  const e = m.epoch;
  assert.deepEqual(m.climbBack(), {startAttempt: 'websocket', emitState: true});
  assert.equal(m.state, 'connecting');
  assert.equal(m.ladder.index, 0);
  assert.equal(m.epoch, e + 1);
  assert.deepEqual(m.connected('websocket'), {emitState: true, probeAfter: null}, 'on WebSocket: no more probes');
});

test('climb back: no probe when upgradeInterval is 0, when WebSocket is not first, or when not connected', () => {
  const off = fellBackToSse({upgradeInterval: 0});
  assert.equal(off.connected('sse').probeAfter, null);
  const noWs = machine({transports: ['sse', 'longpoll']});
  noWs.connect();
  noWs.connectionLost(failed('sse', false));
  noWs.reconnectDue();
  assert.equal(noWs.connected('longpoll').probeAfter, null);
  const m = fellBackToSse();
  assert.equal(m.nextProbe('sse'), null, 'connecting');
  assert.deepEqual(m.climbBack(), {}, 'climbBack() only while connected');
  m.connected('sse');
  m.connectionLost(dropped('sse'));
  assert.equal(m.nextProbe('sse'), null, 'waiting');
  assert.deepEqual(m.climbBack(), {});
});

test('terminal codes: connecting/connected --connectionLost()--> closed, no reconnect', () => {
  for (const code of [3500, 3501, 3503, 3999, 1002, 1007]) {
    for (const wasConnected of [false, true]) {
      const m = machine();
      m.connect();
      if (wasConnected) m.connected('websocket');
      const a = m.connectionLost({transport: 'websocket', opened: true, wasConnected, code, reason: 'r' + code, online: true});
      assert.deepEqual(a, {terminal: {code, reason: 'r' + code}, emitState: true}, String(code));
      assert.deepEqual(m.phase, {name: 'closed', code, reason: 'r' + code});
      assert.equal(m.state, 'closed');
      assert.equal(m.active, false);
      assert.deepEqual(m.reconnectDue(), {});
      assert.deepEqual(m.online(), {});
    }
  }
});

test('not terminal: 3000-3499, 1000-1001, 1006, 1009 (a publish over the limit must not end the client)', () => {
  for (const code of [0, 1000, 1001, 1006, 1009, 3000, 3001, 3002, 3499]) {
    const m = connected();
    const a = m.connectionLost(dropped('websocket', {code}));
    assert.equal(typeof a.scheduleReconnect, 'number', String(code));
    assert.equal(m.phase.name, 'waiting', String(code));
  }
});

test('a disconnect push with reconnect: false closes whatever the code', () => {
  const m = connected();
  const a = m.connectionLost(dropped('websocket', {code: 3000, serverReconnect: false}));
  assert.deepEqual(a.terminal, {code: 3000, reason: 'lost'});
  assert.equal(m.state, 'closed');
});

test('3503 with getToken() (renewableToken) reconnects, even with reconnect: false', () => {
  const m = connected(machine({renewableToken: true}));
  const a = m.connectionLost(dropped('websocket', {code: 3503, serverReconnect: false}));
  assert.equal(a.terminal, undefined);
  assert.equal(a.scheduleReconnect, 50);
  assert.equal(m.phase.name, 'waiting');
  const other = connected(machine({renewableToken: true}));
  assert.ok(other.connectionLost(dropped('websocket', {code: 3501})).terminal, 'only 3503 is renewable');
});

test('3001/3002 (drain, rebalance) wait at least 4 x minReconnectDelay as the backoff cap', () => {
  for (const code of [3001, 3002]) {
    const m = connected();
    assert.equal(m.connectionLost(dropped('websocket', {code})).scheduleReconnect, 200, 'cap 400 x 0.5');
  }
});

test('getToken() failing (no transport): waiting after the backoff, no failure counted, no fallback', () => {
  const m = machine();
  m.connect();
  m.connectionLost(failed('websocket', true));
  m.reconnectDue();
  assert.equal(m.ladder.failuresInRow, 1);
  const a = m.connectionLost({transport: null, code: 0, reason: 'getToken failed', online: true});
  assert.equal(a.fellBackTo, null);
  assert.equal(a.scheduleReconnect, 100);
  assert.equal(m.ladder.failuresInRow, 0);
  assert.equal(m.transport, 'websocket');
});

test('getToken() giving no token: 3500 with reconnect: false closes', () => {
  const m = machine({renewableToken: true});
  m.connect();
  const a = m.connectionLost({transport: null, code: 3500, reason: 'getToken gave no token', serverReconnect: false});
  assert.deepEqual(a.terminal, {code: 3500, reason: 'getToken gave no token'});
  assert.equal(m.state, 'closed');
});

test('connectionLost() outside connecting/connected is ignored (a stale report changes nothing)', () => {
  for (const setup of [m => m, m => { connected(m); m.connectionLost(dropped('websocket')); return m; },
    m => { connected(m); m.suspend('x'); return m; }, m => { m.close('x'); return m; }]) {
    const m = setup(machine());
    const before = {phase: m.phase, epoch: m.epoch, attempt: m.backoff.attempt};
    assert.deepEqual(m.connectionLost(dropped('websocket')), {});
    assert.deepEqual({phase: m.phase, epoch: m.epoch, attempt: m.backoff.attempt}, before);
  }
});

test('close() from every live phase --> closed: emit state and disconnected once', () => {
  const phases = {
    idle: () => machine(),
    connecting: () => { const m = machine(); m.connect(); return m; },
    connected: () => connected(),
    waiting: () => { const m = connected(); m.connectionLost(dropped('websocket')); return m; },
    suspended: () => { const m = connected(); m.suspend('offline'); return m; },
  };
  for (const [name, make] of Object.entries(phases)) {
    const m = make();
    const e = m.epoch;
    assert.deepEqual(m.close('closed by client'), {close: 'closed by client', emitState: true, disconnected: true}, name);
    assert.deepEqual(m.phase, {name: 'closed', code: 0, reason: 'closed by client'}, name);
    assert.equal(m.epoch, e + 1, name);
    assert.equal(m.active, false, name);
  }
});

test('close() when closed: a transition (listeners see it) with no state or disconnected event', () => {
  const m = connected();
  m.close('a');
  const e = m.epoch;
  assert.deepEqual(m.close('b'), {close: 'b', emitState: false, disconnected: false});
  assert.equal(m.epoch, e + 1);
});

test('closed --connect()--> connecting: a fresh start (backoff and failure count reset, position kept)', () => {
  const m = machine();
  m.connect();
  m.connectionLost(failed('websocket', false));  // -> sse
  m.reconnectDue();
  m.connectionLost(failed('sse', true));  // one failure on sse
  assert.equal(m.ladder.failuresInRow, 1);
  m.reconnectDue();
  m.close('bye');
  assert.deepEqual(m.connect(), {startAttempt: 'sse', emitState: true});
  assert.equal(m.ladder.failuresInRow, 0);
  assert.equal(m.backoff.attempt, 0);
});

test('terminal closed --connect()--> connecting', () => {
  const m = connected();
  m.connectionLost(dropped('websocket', {code: 3500}));
  assert.deepEqual(m.connect(), {startAttempt: 'websocket', emitState: true});
});

test('destroy() from every phase: destroyed for good, public state closed', () => {
  const phases = {
    idle: () => machine(),
    connecting: () => { const m = machine(); m.connect(); return m; },
    connected: () => connected(),
    waiting: () => { const m = connected(); m.connectionLost(dropped('websocket')); return m; },
    suspended: () => { const m = connected(); m.suspend('offline'); return m; },
    closed: () => { const m = connected(); m.close('x'); return m; },
  };
  for (const [name, make] of Object.entries(phases)) {
    const m = make();
    const wasClosed = m.state === 'closed';
    assert.deepEqual(m.destroy(), {close: 'destroyed', emitState: !wasClosed, disconnected: !wasClosed, destroy: true}, name);
    assert.equal(m.destroyed, true);
    assert.equal(m.state, 'closed');
    assert.equal(m.active, false);
    const e = m.epoch;
    for (const [ev, run] of Object.entries(EVENTS)) {
      const want = ev === 'connect' ? {error: 'destroyed'} : {};
      assert.deepEqual(run(m), want, name + ' then ' + ev);
    }
    assert.equal(m.epoch, e, name + ': nothing moves a destroyed machine');
    assert.equal(m.phase.name, 'destroyed');
  }
});

test('epoch: +1 on every transition, unchanged on every ignored event', () => {
  const m = machine();
  const steps = [
    [m => m.connect(), 1], [m => m.connect(), 0], [m => m.connected('websocket'), 1], [m => m.visible(), 0],
    [m => m.connectionLost(dropped('websocket')), 1], [m => m.visible(), 1], [m => m.suspend('x'), 1],
    [m => m.online(), 1], [m => m.tokenArrived(), 1], [m => m.climbBack(), 0], [m => m.close('x'), 1],
    [m => m.reconnectDue(), 0], [m => m.destroy(), 1], [m => m.destroy(), 0],
  ];
  steps.forEach(([run, inc], i) => {
    const e = m.epoch;
    run(m);
    assert.equal(m.epoch - e, inc, 'step ' + i);
  });
});

test('TransportLadder: ended() counts only attempts that never connected while online', () => {
  const l = new TransportLadder(ALL);
  assert.deepEqual(l.ended({transport: 'websocket', opened: true, wasConnected: false, online: true}), {switched: false, wrapped: false});
  assert.equal(l.failuresInRow, 1);
  l.ended({transport: 'websocket', opened: true, wasConnected: true, online: true});
  assert.equal(l.failuresInRow, 0, 'a connection that was up resets the count');
  l.ended({transport: 'websocket', opened: false, wasConnected: false, online: false});
  assert.equal(l.failuresInRow, 0, 'offline: nobody to blame');
  l.ended({transport: 'websocket', opened: true, wasConnected: false, online: true});
  l.connected('websocket');
  assert.equal(l.failuresInRow, 0, 'a connect reply resets the count');
  assert.ok(l.worked.has('websocket'));
  l.worked.clear();
  assert.equal(l.current, 'websocket');
  assert.deepEqual(l.ended({transport: 'websocket', opened: false, wasConnected: false, online: true}), {switched: true, wrapped: false});
  assert.equal(l.current, 'sse');
  assert.equal(l.canClimbBack('sse'), true);
  assert.equal(l.canClimbBack('websocket'), false);
  l.climbBack();
  assert.equal(l.current, 'websocket');
  assert.equal(l.canClimbBack('websocket'), false);
});
