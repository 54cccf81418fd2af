// src/http.js: fetchText has one deadline for the whole exchange, body
// included (a stalled body must not hang a connection), a cap on the
// answer's size, and follows an outside abort signal.

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {FakeClock, flush} from './fakes.mjs';
import {fetchText} from '../src/http.js';

function env(fetch) {
  const clock = new FakeClock(0);
  return {clock, env: {fetch, AbortController, setTimeout: (fn, ms) => clock.setTimeout(fn, ms), clearTimeout: id => clock.clear(id)}};
}

// A response whose body yields `chunks`, then stalls forever when `stall`.
function streamed(status, chunks, stall = false) {
  const enc = new TextEncoder();
  let i = 0;
  return {status, body: {getReader: () => ({
    read: () => (i < chunks.length ? Promise.resolve({done: false, value: enc.encode(chunks[i++])})
      : stall ? new Promise(() => {}) : Promise.resolve({done: true})),
    cancel() { this.cancelled = true; },
  })}};
}

const outcome = p => p.then(v => ({ok: v}), e => ({err: e.message}));

test('the answer, read whole from a stream or text(); the request gets the signal and no-store', async () => {
  let init = null;
  const {env: e1, clock} = env((url, i) => { init = i; return Promise.resolve(streamed(200, ['[{"a":', '1}]'])); });
  assert.deepEqual(await fetchText(e1, 'http://h/rpc', {method: 'POST', body: 'x'}, 1000), {status: 200, text: '[{"a":1}]'});
  assert.equal(init.method, 'POST');
  assert.equal(init.cache, 'no-store');
  assert.ok(init.signal);
  assert.equal(clock.timers.size, 0, 'the deadline timer is cleared');
  const {env: e2} = env(() => Promise.resolve({status: 404, text: async () => 'nope'}));
  assert.deepEqual(await fetchText(e2, 'http://h/x', {}, 1000), {status: 404, text: 'nope'});
});

test('a body that stalls after the headers fails at the deadline', async () => {
  const {env: e, clock} = env(() => Promise.resolve(streamed(200, ['[{"partial":'], true)));
  let out = null;
  outcome(fetchText(e, 'http://h/poll', {}, 5000)).then(o => { out = o; });
  await flush();
  clock.tick(4999);
  await flush();
  assert.equal(out, null, 'not before the deadline');
  clock.tick(1);
  await flush();
  assert.deepEqual(out, {err: 'no complete answer within 5000 ms'});
});

test('headers that never come fail at the deadline too (even when fetch ignores the signal)', async () => {
  const {env: e, clock} = env(() => new Promise(() => {}));
  let out = null;
  outcome(fetchText(e, 'http://h/poll', {}, 100)).then(o => { out = o; });
  clock.tick(100);
  await flush();
  assert.deepEqual(out, {err: 'no complete answer within 100 ms'});
});

test('an answer larger than maxBytes fails (stream: cancelled; text)', async () => {
  const resp = streamed(200, ['x'.repeat(600), 'y'.repeat(600)]);
  const {env: e1} = env(() => Promise.resolve(resp));
  assert.deepEqual(await outcome(fetchText(e1, 'http://h/', {}, 1000, null, 1000)), {err: 'answer larger than 1000 bytes'});
  const {env: e2} = env(() => Promise.resolve({status: 200, text: async () => 'z'.repeat(1001)}));
  assert.deepEqual(await outcome(fetchText(e2, 'http://h/', {}, 1000, null, 1000)), {err: 'answer larger than 1000 bytes'});
  const {env: e3} = env(() => Promise.resolve({status: 200, text: async () => 'z'.repeat(1000)}));
  assert.equal((await fetchText(e3, 'http://h/', {}, 1000, null, 1000)).text.length, 1000, 'exactly maxBytes is fine');
});

test('an outside signal aborts the exchange, also one aborted before the call', async () => {
  const {env: e} = env(() => new Promise(() => {}));
  const ctrl = new AbortController();
  const p = outcome(fetchText(e, 'http://h/poll', {}, 60000, ctrl.signal));
  ctrl.abort();
  assert.deepEqual(await p, {err: 'aborted'});
  const done = new AbortController();
  done.abort();
  assert.deepEqual(await outcome(fetchText(e, 'http://h/poll', {}, 60000, done.signal)), {err: 'aborted'});
});

test('a network error is passed on', async () => {
  const {env: e} = env(() => Promise.reject(new TypeError('Failed to fetch')));
  assert.deepEqual(await outcome(fetchText(e, 'http://h/', {}, 1000)), {err: 'Failed to fetch'});
});
