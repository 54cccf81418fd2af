// src/backoff.js: exponential delays with full or equal jitter, a cap, a
// raised floor for drain/rebalance, reset.

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {Backoff} from '../src/backoff.js';

test('full jitter: attempt n draws from [0, min(max, min * 2^n))', () => {
  for (const r of [0, 0.5, 0.999]) {
    const b = new Backoff(100, 2000, () => r, true);
    const got = Array.from({length: 8}, () => b.next());
    const caps = [100, 200, 400, 800, 1600, 2000, 2000, 2000];
    assert.deepEqual(got, caps.map(c => r * c));
  }
});

test('equal jitter: attempt n draws from [cap/2, cap): never a tight loop', () => {
  const lo = new Backoff(100, 2000, () => 0, false);
  const hi = new Backoff(100, 2000, () => 0.999, false);
  for (let i = 0; i < 8; i++) {
    const cap = Math.min(2000, 100 * 2 ** i);
    assert.equal(lo.next(), cap / 2);
    assert.ok(Math.abs(hi.next() - (cap / 2 + 0.999 * cap / 2)) < 1e-9);
  }
});

test('floorCap raises the cap (3001/3002) but never above max', () => {
  const b = new Backoff(100, 2000, () => 1, true);
  assert.equal(b.next(400), 400, 'attempt 0: cap 100 raised to 400');
  assert.equal(b.next(400), 400, 'attempt 1: cap 200 raised to 400');
  assert.equal(b.next(400), 400);
  assert.equal(b.next(400), 800, 'attempt 3: cap 800 is above the floor');
  assert.equal(new Backoff(100, 300, () => 1).next(5000), 300, 'the floor is capped by max');
});

test('reset starts over; the attempt count saturates (no overflow after many failures)', () => {
  const b = new Backoff(100, 1e9, () => 1, true);
  for (let i = 0; i < 1000; i++) b.next();
  assert.equal(b.attempt, 30);
  assert.ok(Number.isFinite(b.next()));
  b.reset();
  assert.equal(b.next(), 100);
});
