// src/subscriptions.js: the client's subscription handling on a stub client
// (a connection object, a recorded _call, fake timers): the order of events
// at a subscribe result, retries and their backoff, timeouts, unsubscribe
// while connecting, 2500, long-poll items.

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {FakeClock, flush} from './fakes.mjs';
import {SubscriptionMethods, installSubscriptionMethods} from '../src/subscriptions.js';
import {Subscription} from '../src/subscription.js';
import {Backoff} from '../src/backoff.js';
import {SwitchboardError} from '../src/errors.js';

class StubClient {
  constructor(connName = 'websocket') {
    this.clock = new FakeClock(0);
    this._env = {setTimeout: (fn, ms) => this.clock.setTimeout(fn, ms), clearTimeout: id => this.clock.clear(id)};
    this._subs = new Map();
    this._conn = {name: connName, connected: true, subsSettled: true, restarts: 0, restartPoll() { this.restarts++; }};
    this._destroyed = false;
    this.transport = connName;
    this.calls = [];
    this.failed = [];
  }
  _log() {}
  _after(ms, fn) { return this.clock.setTimeout(fn, ms); }
  _clear(t) { if (t !== null && t !== undefined) this.clock.clear(t); }
  _call(method, params, connScoped) {
    return new Promise((resolve, reject) => this.calls.push({method, params, connScoped, resolve, reject}));
  }
  _failConn(conn, reason) { this.failed.push(reason); this._conn = null; }
  add(channel, opts = {}) {
    const sub = new Subscription(this, channel, opts);
    sub._backoff = new Backoff(100, 2000, () => 0, false);
    this._subs.set(channel, sub);
    return sub;
  }
}
installSubscriptionMethods(StubClient.prototype);

function record(sub) {
  const ev = [];
  for (const name of ['publication', 'subscribing', 'subscribed', 'unsubscribed', 'unrecovered', 'error']) {
    sub.on(name, x => ev.push(name === 'publication' ? 'pub ' + x.offset : name === 'error' ? 'error ' + x.code : name));
  }
  return ev;
}

test('installSubscriptionMethods: every method, non-enumerable; a name already there is refused', () => {
  const names = Object.getOwnPropertyNames(SubscriptionMethods.prototype).filter(n => n !== 'constructor');
  assert.ok(names.includes('_sendSubscribe') && names.includes('_pollItem'));
  for (const n of names) assert.equal(Object.getOwnPropertyDescriptor(StubClient.prototype, n).enumerable, false);
  class Other { _sendSubscribe() {} }
  assert.throws(() => installSubscriptionMethods(Other.prototype), /already defined/);
});

test('a subscribe carries the position; the result: unrecovered, then subscribed, then the held pushes, once each', async () => {
  const c = new StubClient();
  const sub = c.add('a', {since: {offset: 5, epoch: 'old'}});
  const ev = record(sub);
  c._sendSubscribe(sub);
  assert.deepEqual(c.calls[0].params, {channel: 'a', since: {offset: 5, epoch: 'old'}});
  assert.equal(c.calls[0].connScoped, true);
  for (const o of [10, 11, 12]) sub._buffer.push({channel: 'a', pub: {offset: o, data: o}});
  c.calls[0].resolve({offset: 10, epoch: 'new', recovered: false});
  await flush();
  assert.deepEqual(ev, ['unrecovered', 'subscribed', 'pub 11', 'pub 12'], 'offset 10 is the position itself: not delivered');
  assert.equal(sub.unrecovered, true);
  assert.deepEqual(sub.position, {offset: 12, epoch: 'new'});
});

test('a recovered subscribe delivers the missed publications before subscribed; the seam is deduplicated', async () => {
  const c = new StubClient();
  const sub = c.add('a', {since: {offset: 1, epoch: 'e'}});
  const ev = record(sub);
  c._sendSubscribe(sub);
  sub._buffer.push({channel: 'a', pub: {offset: 3}}, {channel: 'a', pub: {offset: 4}});
  c.calls[0].resolve({offset: 3, epoch: 'e', recovered: true, publications: [{offset: 2}, {offset: 3}]});
  await flush();
  assert.deepEqual(ev, ['pub 2', 'pub 3', 'subscribed', 'pub 4']);
});

test('a temporary subscribe error is retried with a growing backoff; a permanent one ends the subscription', async () => {
  const c = new StubClient();
  const sub = c.add('a');
  const ev = record(sub);
  c._sendSubscribe(sub);
  const times = [];
  for (let i = 0; i < 3; i++) {
    const sentAt = c.clock.t;
    c.calls.at(-1).reject(new SwitchboardError(100, 'internal', true));
    await flush();
    const n = c.calls.length;
    while (c.calls.length === n) c.clock.tick(10);
    times.push(c.clock.t - sentAt);
  }
  assert.ok(times[0] >= 50 && times[1] >= 100 && times[2] >= 200, 'equal jitter from min/2, doubling: ' + times);
  c.calls.at(-1).reject(new SwitchboardError(103, 'permission denied'));
  await flush();
  assert.deepEqual(ev, ['error 100', 'error 100', 'error 100', 'error 103', 'unsubscribed']);
  assert.equal(sub.state, 'unsubscribed');
  assert.equal(c._subs.has('a'), false);
});

test('a subscribe that times out remakes the connection; a closed one waits for the next', async () => {
  const c = new StubClient();
  const sub = c.add('a');
  c._sendSubscribe(sub);
  c.calls[0].reject(new SwitchboardError('closed', 'connection closed'));
  await flush();
  assert.deepEqual(c.failed, []);
  assert.equal(sub.state, 'subscribing');
  c._sendSubscribe(sub);
  c.calls[1].reject(new SwitchboardError('timeout', 'no reply', true));
  await flush();
  assert.deepEqual(c.failed, ['subscribe to a timed out']);
});

test('unsubscribe: told to the node when connected; not while connecting (the connect reply handles it); not when the server ended it', () => {
  const c = new StubClient();
  const a = c.add('a'), b = c.add('b'), d = c.add('d');
  c._unsubscribe(a, 0, 'unsubscribe called');
  assert.deepEqual(c.calls.map(x => [x.method, x.params.channel]), [['unsubscribe', 'a']]);
  c._conn.connected = false;
  c._unsubscribe(b, 0, 'unsubscribe called');
  c._conn.connected = true;
  c._unsubscribe(d, 2000, 'by server', true);
  assert.equal(c.calls.length, 1);
  assert.deepEqual([a.state, b.state, d.state], ['unsubscribed', 'unsubscribed', 'unsubscribed']);
  assert.equal(c._subs.size, 0);
});

test('an unsubscribe push 2500 goes back to subscribing and subscribes again from the position; other codes end it', async () => {
  const c = new StubClient();
  const sub = c.add('a');
  const ev = record(sub);
  c._sendSubscribe(sub);
  c.calls[0].resolve({offset: 7, epoch: 'e'});
  await flush();
  c._channelPush(sub, {channel: 'a', unsubscribe: {code: 2500, reason: 'insufficient state'}});
  assert.deepEqual(c.calls[1].params, {channel: 'a', since: {offset: 7, epoch: 'e'}});
  c._channelPush(sub, {channel: 'a', unsubscribe: {code: 2000, reason: 'server'}});
  assert.deepEqual(ev, ['subscribed', 'subscribing', 'unsubscribed']);
});

test('long-polling: a position with recovered: false fires unrecovered, then subscribed; publications follow the position', () => {
  const c = new StubClient('longpoll');
  const sub = c.add('a', {since: {offset: 3, epoch: 'e1'}});
  const ev = record(sub);
  const {subs, probe} = c._pollSubs(c._conn);
  assert.deepEqual({...subs}, {a: {offset: 3, epoch: 'e1'}});
  assert.deepEqual(probe, []);
  assert.equal(sub.state, 'subscribed', 'polled from its position');
  c._pollItem(c._conn, sub, {channel: 'a', position: {offset: 9, epoch: 'e2', recovered: false}});
  c._pollItem(c._conn, sub, {channel: 'a', pub: {offset: 9}});
  c._pollItem(c._conn, sub, {channel: 'a', pub: {offset: 10}});
  assert.deepEqual(ev, ['subscribed', 'unrecovered', 'subscribed', 'pub 10']);
  assert.deepEqual(sub.position, {offset: 10, epoch: 'e2'});
});

test('long-polling: a new channel is probed (timeout 0); no position in the answer: followed without offsets', () => {
  const c = new StubClient('longpoll');
  const sub = c.add('a');
  const ev = record(sub);
  const {subs, probe} = c._pollSubs(c._conn);
  assert.deepEqual({...subs}, {a: {}});
  assert.deepEqual(probe, [sub]);
  c._pollProbed(probe);
  assert.deepEqual(ev, ['subscribed']);
  assert.equal(sub.position, null);
  c._kickSubscribe(c.add('b'));
  assert.equal(c._conn.restarts, 1, 'a subscribe while long-polling restarts the poll');
});

test('long-polling: a channel that needs a token is polled with it once getToken gave one; 109 and 2501 ask again, from the same position, 109 after the backoff', async () => {
  const c = new StubClient('longpoll');
  let n = 0;
  const sub = c.add('$p', {since: {offset: 3, epoch: 'e'}, getToken: async ({channel}) => channel + '-t' + (++n)});
  const ev = record(sub);
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {}, 'no token yet: left out of the poll');
  await c._pollTokens();
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {'$p': {offset: 3, epoch: 'e', token: '$p-t1'}});
  c._pollItem(c._conn, sub, {channel: '$p', error: {code: 109, message: 'token expired'}});
  assert.equal(sub.state, 'subscribing');
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {}, 'no token during the backoff');
  await c._pollTokens();
  assert.equal(n, 1, 'getToken is not asked again before the backoff is over');
  c.clock.tick(100);
  assert.equal(c._conn.restarts, 1, 'the backoff over, the poll restarts');
  await c._pollTokens();
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {'$p': {offset: 3, epoch: 'e', token: '$p-t2'}});
  c._pollItem(c._conn, sub, {channel: '$p', pub: {offset: 4}});
  c._pollItem(c._conn, sub, {channel: '$p', unsubscribe: {code: 2501, reason: 'token expired'}});
  await c._pollTokens();
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {'$p': {offset: 4, epoch: 'e', token: '$p-t3'}});
  assert.deepEqual(ev, ['subscribed', 'subscribing', 'error 109', 'subscribed', 'pub 4', 'subscribing', 'subscribed']);
  // Another refusal ends it, as over WebSocket.
  c._pollItem(c._conn, sub, {channel: '$p', error: {code: 103, message: 'permission denied'}});
  assert.equal(sub.state, 'unsubscribed');
});

test('long-polling: a getToken that fails or hangs leaves its channel out and is asked again after the backoff; no token ends it', async () => {
  const c = new StubClient('longpoll');
  c._opts = {requestTimeout: 500};
  const answers = [() => Promise.reject(new Error('backend down')), () => new Promise(() => {}), async () => 't', async () => ''];
  let n = 0;
  const sub = c.add('$p', {getToken: () => answers[n++]()});
  const other = c.add('open');
  const ev = record(sub);
  await c._pollTokens();
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {open: {}}, 'the others are polled meanwhile');
  c.clock.tick(100);
  const pending = c._pollTokens();
  await flush();
  c.clock.tick(500);
  await pending;
  assert.deepEqual(Object.keys(c._pollSubs(c._conn).subs), ['open'], 'a getToken that hangs times out');
  c.clock.tick(200);
  await c._pollTokens();
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {'$p': {token: 't'}, open: {}});
  sub._token = null;
  await c._pollTokens();
  assert.equal(sub.state, 'unsubscribed');
  assert.deepEqual(ev, ['error transport', 'error transport', 'unsubscribed']);
  assert.equal(other.state, 'subscribing');
});

test('long-polling: a channel refused for now (111, 100, temporary) leaves the polls for its backoff and comes back from its position; 103 ends it', () => {
  const c = new StubClient('longpoll');
  const sub = c.add('a', {since: {offset: 4, epoch: 'e'}});
  const ev = record(sub);
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {a: {offset: 4, epoch: 'e'}});
  c._pollItem(c._conn, sub, {channel: 'a', error: {code: 111, message: 'too many requests'}});
  assert.equal(sub.state, 'subscribing');
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {}, 'out of the polls during the backoff');
  c.clock.tick(100);
  assert.equal(c._conn.restarts, 1);
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {a: {offset: 4, epoch: 'e'}});
  c._pollItem(c._conn, sub, {channel: 'a', error: {code: 103, message: 'permission denied'}});
  assert.equal(sub.state, 'unsubscribed');
  assert.deepEqual(ev, ['subscribed', 'subscribing', 'error 111', 'subscribed', 'error 103', 'unsubscribed']);
});

test('long-polling: a channel named __proto__ is polled like any other', () => {
  const c = new StubClient('longpoll');
  c.add('__proto__', {since: {offset: 2, epoch: 'e'}});
  const {subs} = c._pollSubs(c._conn);
  assert.equal(JSON.stringify({subs}), '{"subs":{"__proto__":{"offset":2,"epoch":"e"}}}');
});

// -- holes: a publication past the next offset ----------------------------------

test('a gap: not delivered; one unsubscribe then one subscribe from the last position delivered; the recovery delivers the rest once, in order', async () => {
  const c = new StubClient();
  const sub = c.add('a');
  const ev = record(sub);
  const why = [];
  sub.on('subscribing', x => why.push([x.code, x.reason]));
  c._sendSubscribe(sub);
  c.calls[0].resolve({offset: 4, epoch: 'e'});
  await flush();
  c._channelPush(sub, {channel: 'a', pub: {offset: 5}});
  c._channelPush(sub, {channel: 'a', pub: {offset: 7}});  // 6 never came
  assert.deepEqual(c.calls.slice(1).map(x => [x.method, x.params, x.connScoped]), [
    ['unsubscribe', {channel: 'a'}, true],  // the node still has the subscription: a bare subscribe would be refused (105)
    ['subscribe', {channel: 'a', since: {offset: 5, epoch: 'e'}}, true],
  ]);
  assert.equal(sub.state, 'subscribing');
  assert.deepEqual(sub.position, {offset: 5, epoch: 'e'});
  assert.deepEqual(why, [[2500, 'gap: offset 7 after 5']]);
  // Pushes while it is being made again are held (client.js) and sorted out at the reply.
  sub._buffer.push({channel: 'a', pub: {offset: 7}}, {channel: 'a', pub: {offset: 8}}, {channel: 'a', pub: {offset: 9}});
  c.calls[2].resolve({offset: 8, epoch: 'e', recovered: true, publications: [{offset: 6}, {offset: 7}, {offset: 8}]});
  await flush();
  assert.deepEqual(ev, ['subscribed', 'pub 5', 'subscribing', 'pub 6', 'pub 7', 'pub 8', 'subscribed', 'pub 9']);
  assert.equal(c.calls.length, 3);
  assert.deepEqual(sub.position, {offset: 9, epoch: 'e'});
});

test('a second gap while the resubscribe is in flight sends nothing more and delivers nothing', async () => {
  const c = new StubClient();
  const sub = c.add('a', {since: {offset: 4, epoch: 'e'}});
  const ev = record(sub);
  c._sendSubscribe(sub);
  c.calls[0].resolve({offset: 4, epoch: 'e', recovered: true, publications: []});
  await flush();
  c._channelPush(sub, {channel: 'a', pub: {offset: 6}});
  assert.equal(c.calls.length, 3);
  c._channelPush(sub, {channel: 'a', pub: {offset: 8}});  // delivered to it directly, past another hole
  c._onGap(sub, {offset: 9});
  assert.equal(c.calls.length, 3, 'no second unsubscribe or subscribe');
  assert.deepEqual(ev, ['subscribed', 'subscribing']);
  c.calls[2].resolve({offset: 8, epoch: 'e', recovered: true, publications: [{offset: 5}, {offset: 6}, {offset: 7}, {offset: 8}]});
  await flush();
  assert.deepEqual(ev, ['subscribed', 'subscribing', 'pub 5', 'pub 6', 'pub 7', 'pub 8', 'subscribed']);
  assert.equal(c.calls.length, 3);
});

test('a 2500 push for the subscription a gap replaces, arriving while its resubscribe is in flight, sends no second subscribe (the node would refuse it: 105)', async () => {
  const c = new StubClient();
  const sub = c.add('a', {since: {offset: 4, epoch: 'e'}});
  const ev = record(sub);
  c._sendSubscribe(sub);
  c.calls[0].resolve({offset: 4, epoch: 'e', recovered: true, publications: []});
  await flush();
  c._channelPush(sub, {channel: 'a', pub: {offset: 6}});
  assert.equal(c.calls.length, 3);
  c._channelPush(sub, {channel: 'a', unsubscribe: {code: 2500, reason: 'insufficient state'}});
  assert.equal(c.calls.length, 3, 'no second subscribe');
  c.calls[2].resolve({offset: 6, epoch: 'e', recovered: true, publications: [{offset: 5}, {offset: 6}]});
  await flush();
  assert.equal(sub.state, 'subscribed');
  assert.deepEqual(ev, ['subscribed', 'subscribing', 'pub 5', 'pub 6', 'subscribed']);
});

test('a recovery with a hole (in its list, or short of its offset) is taken as recovered: false: unrecovered, the position jumps, no resubscribe loop', async () => {
  for (const [res, note] of [
    [{offset: 7, epoch: 'e', recovered: true, publications: [{offset: 6}, {offset: 7}]}, '5 missing from the list'],
    [{offset: 7, epoch: 'e', recovered: true, publications: [{offset: 5}]}, 'the list ends before its offset'],
  ]) {
    const c = new StubClient();
    const sub = c.add('a');
    const ev = record(sub);
    let ctx = null;
    sub.on('subscribed', x => { ctx = x; });
    c._sendSubscribe(sub);
    c.calls[0].resolve({offset: 4, epoch: 'e'});
    await flush();
    c._channelPush(sub, {channel: 'a', pub: {offset: 6}});
    assert.deepEqual(c.calls[2].params.since, {offset: 4, epoch: 'e'}, note);
    sub._buffer.push({channel: 'a', pub: {offset: 7}}, {channel: 'a', pub: {offset: 8}});
    c.calls[2].resolve(res);
    await flush();
    assert.deepEqual(ev, ['subscribed', 'subscribing', 'unrecovered', 'subscribed', 'pub 8'], note);
    assert.equal(ctx.recovered, false, note);
    assert.equal(sub.unrecovered, true, note);
    assert.deepEqual(sub.position, {offset: 8, epoch: 'e'}, note);
    assert.equal(c.calls.length, 3, note + ': no other resubscribe');
  }
});

test('long-polling: a gap in a poll answer: the rest of the answer is skipped, the next poll asks again from the position, once; its answer is delivered once, in order', () => {
  const c = new StubClient('longpoll');
  const sub = c.add('a', {since: {offset: 4, epoch: 'e'}});
  const ev = record(sub);
  c._pollSubs(c._conn);
  c._pollMoved = false;
  for (const item of [{pub: {offset: 5}}, {pub: {offset: 7}}, {pub: {offset: 8}}, {position: {offset: 5, epoch: 'e'}}, {pub: {offset: 10}},
    {position: {offset: 10, epoch: 'e'}}]) {
    c._pollItem(c._conn, sub, {channel: 'a', ...item});
  }
  assert.deepEqual(ev, ['subscribed', 'pub 5', 'subscribing'], 'nothing past the hole; one resubscribe');
  assert.deepEqual(sub.position, {offset: 5, epoch: 'e'}, 'the paging position past the hole is not taken either');
  assert.equal(c._pollMoved, true, 'polled again at once');
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {a: {offset: 5, epoch: 'e'}});
  for (const o of [6, 7, 8]) c._pollItem(c._conn, sub, {channel: 'a', pub: {offset: o}});
  assert.deepEqual(ev, ['subscribed', 'pub 5', 'subscribing', 'subscribed', 'pub 6', 'pub 7', 'pub 8']);
  assert.equal(sub.unrecovered, false);
  assert.deepEqual(c.calls, [], 'no commands over long-polling');
});

test('long-polling: a hole the node\'s history lacks: asked again once, then unrecovered and on from there (no poll loop)', () => {
  const c = new StubClient('longpoll');
  const sub = c.add('a', {since: {offset: 4, epoch: 'e'}});
  const ev = record(sub);
  const lost = [];
  sub.on('unrecovered', x => lost.push([x.offset, x.epoch]));
  c._pollSubs(c._conn);
  c._pollItem(c._conn, sub, {channel: 'a', pub: {offset: 6}});
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {a: {offset: 4, epoch: 'e'}});
  c._pollItem(c._conn, sub, {channel: 'a', pub: {offset: 6}});  // the same answer again: 5 is not in history
  c._pollItem(c._conn, sub, {channel: 'a', pub: {offset: 7}});
  assert.deepEqual(ev, ['subscribed', 'subscribing', 'subscribed', 'unrecovered', 'subscribed', 'pub 6', 'pub 7']);
  assert.deepEqual(lost, [[5, 'e']]);
  assert.equal(sub.unrecovered, true);
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {a: {offset: 7, epoch: 'e'}});
  // A position that jumps ahead (not recovered: false) is a hole too: asked again, then taken as lost.
  c._pollItem(c._conn, sub, {channel: 'a', position: {offset: 9, epoch: 'e'}});
  assert.equal(sub.state, 'subscribing');
  assert.deepEqual({...c._pollSubs(c._conn).subs}, {a: {offset: 7, epoch: 'e'}});
  c._pollItem(c._conn, sub, {channel: 'a', position: {offset: 9, epoch: 'e'}});
  assert.deepEqual(lost, [[5, 'e'], [9, 'e']]);
  assert.deepEqual(sub.position, {offset: 9, epoch: 'e'});
});
