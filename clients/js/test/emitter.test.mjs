// src/emitter.js: listeners, removal, and a listener's exception not
// breaking the others (it is rethrown from a timer).

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {Emitter} from '../src/emitter.js';

test('on() returns a remover; off(event, fn), off(event), off()', () => {
  const e = new Emitter();
  const got = [];
  const off1 = e.on('x', v => got.push('1:' + v));
  e.on('x', v => got.push('2:' + v));
  e.on('y', v => got.push('y:' + v));
  e._emit('x', 'a');
  off1();
  e._emit('x', 'b');
  e.off('x');
  e._emit('x', 'c');
  e._emit('y', 'd');
  e.off();
  e._emit('y', 'e');
  assert.deepEqual(got, ['1:a', '2:a', '2:b', 'y:d']);
});

test('a listener that throws does not stop the others; the error is rethrown from a timer', () => {
  const e = new Emitter();
  const got = [];
  const saved = globalThis.setTimeout;
  const thrown = [];
  globalThis.setTimeout = fn => { try { fn(); } catch (err) { thrown.push(err.message); } };
  try {
    e.on('x', () => { throw new Error('listener bug'); });
    e.on('x', v => got.push(v));
    e._emit('x', 1);
  } finally {
    globalThis.setTimeout = saved;
  }
  assert.deepEqual(got, [1]);
  assert.deepEqual(thrown, ['listener bug']);
});

test('a listener removed by an earlier one during an emit still runs this time (a snapshot)', () => {
  const e = new Emitter();
  const got = [];
  const fn2 = () => got.push(2);
  e.on('x', () => { got.push(1); e.off('x', fn2); });
  e.on('x', fn2);
  e._emit('x');
  e._emit('x');
  assert.deepEqual(got, [1, 2, 1]);
});
