// src/subscription.js: a Subscription on its own (the client is a stub):
// handlers, position and delivery once in offset order, since, ready().

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {FakeClock, flush} from './fakes.mjs';
import {Subscription} from '../src/subscription.js';

function stub() {
  const clock = new FakeClock(0);
  const calls = [];
  const client = {
    _env: {setTimeout: (fn, ms) => clock.setTimeout(fn, ms), clearTimeout: id => clock.clear(id)},
    _log() {},
    _unsubscribe: (sub, code, reason) => calls.push(['unsubscribe', code, reason]),
    _resubscribe: sub => calls.push(['resubscribe']),
    _onGap: (sub, pub) => calls.push(['gap', pub.offset, sub.position.offset]),
  };
  return {client, clock, calls};
}

test('handlers in the options are listeners of their events', () => {
  const {client} = stub();
  const got = [];
  const names = {onPublication: 'publication', onJoin: 'join', onLeave: 'leave', onSubscribing: 'subscribing',
    onSubscribed: 'subscribed', onUnsubscribed: 'unsubscribed', onError: 'error', onUnrecovered: 'unrecovered'};
  const opts = {};
  for (const [k, ev] of Object.entries(names)) opts[k] = () => got.push(ev);
  const sub = new Subscription(client, 'a', opts);
  for (const ev of Object.values(names)) sub._emit(ev, {});
  assert.deepEqual(got, Object.values(names));
  assert.equal(sub.state, 'subscribing');
  assert.equal(sub.channel, 'a');
});

test('since: a full position is kept, anything else ignored', () => {
  const {client} = stub();
  assert.deepEqual(new Subscription(client, 'a', {since: {offset: 5, epoch: 'e'}}).position, {offset: 5, epoch: 'e'});
  for (const since of [{offset: 5}, {epoch: 'e'}, {offset: '5', epoch: 'e'}, null]) {
    assert.equal(new Subscription(client, 'a', {since}).position, null, JSON.stringify(since));
  }
});

test('_deliver: each offset once, in order; position follows; epoch kept; no-offset publications pass', () => {
  const {client, calls} = stub();
  const got = [];
  const sub = new Subscription(client, 'a', {since: {offset: 2, epoch: 'e1'}, onPublication: p => got.push([p.offset, p.epoch, p.data])});
  assert.equal(sub._deliver({offset: 2, data: 'old'}), false, 'at the position: a duplicate');
  assert.equal(sub._deliver({offset: 3, data: 'c'}), true);
  assert.equal(sub._deliver({offset: 3, data: 'c again'}), false);
  assert.equal(sub._deliver({offset: 4, data: 'd'}, 'e1'), true);
  assert.equal(sub._deliver({offset: 3, data: 'late'}), false, 'below the position: dropped');
  assert.equal(sub._deliver({data: 'no history'}), true);
  assert.deepEqual(got, [[3, 'e1', 'c'], [4, 'e1', 'd'], [undefined, 'e1', 'no history']]);
  assert.deepEqual(sub.position, {offset: 4, epoch: 'e1'});
  assert.deepEqual(calls, []);
  const pos = sub.position;
  pos.offset = 99;
  assert.equal(sub.position.offset, 4, 'position is a copy');
});

test('_deliver: a publication past a hole (same epoch) is not delivered and the position stays; the client is told (_onGap)', () => {
  const {client, calls} = stub();
  const got = [];
  const sub = new Subscription(client, 'a', {since: {offset: 4, epoch: 'e1'}, onPublication: p => got.push(p.offset)});
  assert.equal(sub._deliver({offset: 6, data: 'f'}), false, 'a live one past the hole');
  assert.equal(sub._deliver({offset: 7, data: 'g'}, 'e1'), false, 'one of a list in the same epoch');
  assert.deepEqual(got, []);
  assert.deepEqual(sub.position, {offset: 4, epoch: 'e1'}, 'the position stays at the last one delivered');
  assert.deepEqual(calls, [['gap', 6, 4], ['gap', 7, 4]]);
  assert.equal(sub._deliver({offset: 5, data: 'e'}), true, 'the next one is delivered');
  assert.equal(sub._deliver({offset: 9, data: 'new epoch'}, 'e2'), true, 'another epoch is no hole: offsets start over');
  assert.deepEqual(got, [5, 9]);
  assert.deepEqual(sub.position, {offset: 9, epoch: 'e2'});
});

test('unsubscribe() and subscribe() go through the client', () => {
  const {client, calls} = stub();
  const sub = new Subscription(client, 'a', {});
  sub.unsubscribe();
  sub.subscribe();
  assert.deepEqual(calls, [['unsubscribe', 0, 'unsubscribe called'], ['resubscribe']]);
});

test('ready(): at once when subscribed, rejected when unsubscribed, settles on the events, times out', async () => {
  const {client, clock} = stub();
  const settle = p => p.then(() => 'ok', e => e.code);
  const sub = new Subscription(client, 'a', {});
  const a = settle(sub.ready());
  const b = settle(sub.ready(1000));
  sub.state = 'subscribed';
  sub._emit('subscribed', {});
  assert.equal(await a, 'ok');
  assert.equal(await b, 'ok');
  assert.equal(clock.timers.size, 0, 'the timeout timer is cleared');
  assert.equal(await settle(sub.ready()), 'ok');
  sub.state = 'subscribing';
  const c = settle(sub.ready());
  sub._emit('unsubscribed', {code: 103, reason: 'permission denied'});
  assert.equal(await c, 103);
  sub.state = 'unsubscribed';
  assert.equal(await settle(sub.ready()), 'closed');
  sub.state = 'subscribing';
  let d = null;
  settle(sub.ready(500)).then(v => { d = v; });
  clock.tick(499);
  await flush();
  assert.equal(d, null);
  clock.tick(1);
  await flush();
  assert.equal(d, 'timeout');
  assert.equal(sub._handlers.get('subscribed').length, 0, 'its listeners are removed');
});
