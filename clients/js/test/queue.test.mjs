// src/queue.js: the request queue and its body-size cap. splitBatches and
// PostQueue never make a body larger than the cap (unless one command alone
// is, which RequestQueue refuses before it is queued); RequestQueue settles
// each command once (reply, deadline, rejection), resends requests after a
// connection dies and fails connection-scoped commands with it.

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {FakeClock, flush} from './fakes.mjs';
import {splitBatches, PostQueue, RequestQueue} from '../src/queue.js';
import {byteLength} from '../src/util.js';

const cmd = (id, n, ch = 'a') => ({id, publish: {channel: ch, data: 'x'.repeat(n)}});
const size = c => byteLength(JSON.stringify(c));

test('splitBatches: every body within the cap, commands in order, each exactly once', () => {
  const cmds = [];
  for (let i = 1; i <= 200; i++) cmds.push(cmd(i, (i * 37) % 500, i % 2 ? 'a' : 'ü-ch'));
  for (const cap of [600, 1000, 4096, 65536]) {
    const batches = splitBatches(cmds, cap);
    for (const b of batches) {
      assert.ok(byteLength(b.text) <= cap, `body of ${byteLength(b.text)} bytes over the cap ${cap}`);
      assert.equal(b.text, b.cmds.map(c => JSON.stringify(c)).join('\n'));
    }
    assert.deepEqual(batches.flatMap(b => b.cmds).map(c => c.id), cmds.map(c => c.id));
  }
});

test('splitBatches: bodies are full (the next command would not have fitted)', () => {
  const cmds = [];
  for (let i = 1; i <= 50; i++) cmds.push(cmd(i, 100));
  const cap = 1000;
  const batches = splitBatches(cmds, cap);
  for (let i = 0; i + 1 < batches.length; i++) {
    const next = batches[i + 1].cmds[0];
    assert.ok(byteLength(batches[i].text) + 1 + size(next) > cap, 'a body was cut early');
  }
});

test('splitBatches: the cap is inclusive (a body of exactly the cap is one body)', () => {
  const a = cmd(1, 10), b = cmd(2, 10);
  const exact = size(a) + 1 + size(b);
  assert.equal(splitBatches([a, b], exact).length, 1);
  assert.equal(splitBatches([a, b], exact - 1).length, 2);
});

test('splitBatches: a command larger than the cap goes alone; no commands, no bodies', () => {
  const big = cmd(2, 5000);
  const batches = splitBatches([cmd(1, 10), big, cmd(3, 10)], 1000);
  assert.deepEqual(batches.map(b => b.cmds.map(c => c.id)), [[1], [2], [3]]);
  assert.deepEqual(splitBatches([], 1000), []);
});

test('PostQueue: one POST in flight, bodies within the cap, in order', async () => {
  const posts = [];
  let inFlight = 0, maxInFlight = 0;
  const releases = [];
  const q = new PostQueue((batch, text) => {
    inFlight++; maxInFlight = Math.max(maxInFlight, inFlight);
    posts.push({ids: batch.map(c => c.id), bytes: byteLength(text)});
    return new Promise(r => releases.push(() => { inFlight--; r(); }));
  }, 1000);
  for (let i = 1; i <= 40; i++) q.push([cmd(i, 100)]);
  await flush();
  assert.equal(posts.length, 1, 'one POST until the first answers');
  assert.deepEqual(posts[0].ids, [1], 'the first command goes alone (nothing else was queued yet)');
  while (releases.length) { releases.shift()(); await flush(); }
  assert.equal(maxInFlight, 1);
  assert.deepEqual(posts.flatMap(p => p.ids), Array.from({length: 40}, (_, i) => i + 1));
  for (const p of posts) assert.ok(p.bytes <= 1000, `a body of ${p.bytes} bytes`);
  assert.ok(posts.length >= 5, 'the queue was split into several bodies');
});

test('PostQueue: a POST that fails does not stop the queue; stop() drops what is queued', async () => {
  const posts = [];
  let fail = true;
  const q = new PostQueue(batch => {
    posts.push(batch.map(c => c.id));
    if (fail) { fail = false; return Promise.reject(new Error('network')); }
    return Promise.resolve();
  }, 1000);
  q.push([cmd(1, 10)]);
  q.push([cmd(2, 10)]);
  await flush();
  assert.deepEqual(posts, [[1], [2]]);
  q.stop();
  q.push([cmd(3, 10)]);
  await flush();
  assert.deepEqual(posts, [[1], [2]], 'nothing after stop()');
});

// -- RequestQueue ---------------------------------------------------------------

function queue(opts = {}) {
  const clock = new FakeClock(0);
  const env = {setTimeout: (fn, ms) => clock.setTimeout(fn, ms), clearTimeout: id => clock.clear(id)};
  const q = new RequestQueue(env, {maxBytes: 1000, timeoutMs: 5000, firstId: 2, ...opts});
  return {q, clock};
}

function conn(name = 'c') {
  return {name, sent: [], send(cmds) { this.sent.push(...cmds); }};
}

const settle = p => p.then(v => ({ok: v}), e => ({err: e.code}));

test('RequestQueue: a command over maxBytes is refused with too_large before it is queued or sent', async () => {
  const {q} = queue();
  const c = conn();
  const r = await settle(q.add('publish', {channel: 'a', data: 'x'.repeat(2000)}, false, c));
  assert.deepEqual(r, {err: 'too_large'});
  assert.equal(q.size, 0);
  assert.deepEqual(c.sent, []);
});

test('RequestQueue: the cap counts the whole command, UTF-8 bytes, inclusive', async () => {
  const {q} = queue({maxBytes: 100});
  const c = conn();
  const base = size({id: 2, publish: {channel: 'a', data: ''}});
  const fits = q.add('publish', {channel: 'a', data: 'x'.repeat(100 - base)}, false, c);
  assert.equal(c.sent.length, 1, 'exactly the cap is sent');
  const over = await settle(q.add('publish', {channel: 'a', data: 'é'.repeat(Math.ceil((100 - base) / 2) + 1)}, false, c));
  assert.deepEqual(over, {err: 'too_large'}, 'two bytes per é');
  q.reply({id: 2, result: {}});
  assert.deepEqual(await settle(fits), {ok: {}});
});

test('RequestQueue: params that are not JSON are refused with bad_request', async () => {
  const {q} = queue();
  const cyclic = {}; cyclic.self = cyclic;
  assert.deepEqual(await settle(q.add('publish', {channel: 'a', data: cyclic}, false, null)), {err: 'bad_request'});
  assert.deepEqual(await settle(q.add('publish', {channel: 'a', data: 1n}, false, null)), {err: 'bad_request'});
  assert.equal(q.size, 0);
});

test('RequestQueue: ids from firstId up; a reply settles its command once', async () => {
  const {q} = queue();
  const c = conn();
  const a = q.add('ping', {}, false, c);
  const b = q.add('history', {channel: 'x'}, false, c);
  assert.deepEqual(c.sent.map(x => x.id), [2, 3]);
  assert.equal(q.reply({id: 3, error: {code: 103, message: 'permission denied'}}), true);
  assert.equal(q.reply({id: 2}), true);
  assert.equal(q.reply({id: 2, result: {late: true}}), false, 'a second reply finds nothing');
  assert.equal(q.reply({id: 99, result: {}}), false);
  assert.deepEqual(await settle(a), {ok: {}});
  assert.deepEqual(await settle(b), {err: 103});
  assert.equal(q.size, 0);
});

test('RequestQueue: no reply within timeoutMs rejects with timeout (temporary), and only then', async () => {
  const {q, clock} = queue();
  let out = null;
  q.add('ping', {}, false, null).then(v => { out = v; }, e => { out = e; });
  clock.tick(4999);
  await flush();
  assert.equal(out, null);
  clock.tick(1);
  await flush();
  assert.equal(out.code, 'timeout');
  assert.equal(out.temporary, true);
  assert.equal(q.size, 0);
  assert.equal(q.reply({id: 2, result: {}}), false, 'a reply after the deadline is ignored');
});

test('RequestQueue: a reply clears the deadline timer', async () => {
  const {q, clock} = queue();
  const p = q.add('ping', {}, false, conn());
  assert.equal(clock.timers.size, 1);
  q.reply({id: 2, result: {}});
  assert.equal(clock.timers.size, 0);
  await p;
});

test('RequestQueue: connectionLost fails connection-scoped commands sent on it, requests wait and are resent once', async () => {
  const {q} = queue();
  const c1 = conn('c1'), c2 = conn('c2');
  const sub = settle(q.add('subscribe', {channel: 'a'}, true, c1));
  const pub = q.add('publish', {channel: 'a', data: 1}, false, c1);
  const later = q.add('ping', {}, false, null);  // made while disconnected
  q.connectionLost(c1);
  assert.deepEqual(await sub, {err: 'closed'});
  assert.equal(q.size, 2);
  q.sendUnsent(c2);
  assert.deepEqual(c2.sent.map(c => Object.keys(c)[1]), ['publish', 'ping']);
  assert.deepEqual(c2.sent[0], c1.sent[1], 'the same command (same id) is resent');
  q.sendUnsent(c2);
  assert.equal(c2.sent.length, 2, 'not sent twice on one connection');
  q.reply({id: c2.sent[0].id, result: {offset: 1}});
  q.reply({id: c2.sent[1].id, result: {}});
  assert.deepEqual(await pub, {offset: 1});
  assert.deepEqual(await later, {});
});

test('RequestQueue: connectionLost of another connection changes nothing', async () => {
  const {q} = queue();
  const c1 = conn('c1'), c2 = conn('c2');
  q.add('subscribe', {channel: 'a'}, true, c2).catch(() => {});
  q.connectionLost(c1);
  assert.equal(q.size, 1);
  q.sendUnsent(c2);
  assert.equal(c2.sent.length, 1, 'already sent on c2');
});

test('RequestQueue: suspend fails every connection-scoped command, requests wait', async () => {
  const {q} = queue();
  const c1 = conn();
  const sub = settle(q.add('subscribe', {channel: 'a'}, true, c1));
  const pub = settle(q.add('publish', {channel: 'a', data: 1}, false, c1));
  q.suspend('browser offline');
  assert.deepEqual(await sub, {err: 'closed'});
  assert.equal(q.size, 1);
  const c2 = conn();
  q.sendUnsent(c2);
  assert.equal(c2.sent.length, 1);
  q.reply({id: c2.sent[0].id, result: {offset: 7}});
  assert.deepEqual(await pub, {ok: {offset: 7}}, 'the request landed on the next connection');
});

test('RequestQueue: detach marks what was sent on a connection as unsent, without failing anything', async () => {
  const {q} = queue();
  const c1 = conn(), c2 = conn();
  const sub = q.add('subscribe', {channel: 'a'}, true, c1);
  q.detach(c1);
  q.sendUnsent(c2);
  assert.equal(c2.sent.length, 1);
  q.reply({id: 2, result: {}});
  assert.deepEqual(await sub, {});
});

test('RequestQueue: reject(cmds) settles those commands only; rejectAll the rest, timers cleared', async () => {
  const {q, clock} = queue();
  const c = conn();
  const a = settle(q.add('ping', {}, false, c));
  const b = settle(q.add('ping', {}, false, c));
  q.reject([c.sent[0]], {code: 107, message: 'bad request'});
  assert.deepEqual(await a, {err: 107});
  assert.equal(q.size, 1);
  q.rejectAll(Object.assign(new Error('closed'), {code: 'closed'}));
  assert.deepEqual(await b, {err: 'closed'});
  assert.equal(q.size, 0);
  assert.equal(clock.timers.size, 0);
});
