// src/errors.js and src/util.js: error codes and conversions, framing,
// channel names, endpoint URLs.

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {SwitchboardError, toError, isTerminal, isTokenExpired, errorFromBody} from '../src/errors.js';
import {byteLength, parseLines, validChannel, endpoints, jsonOrNull, randomId, CHANNEL_MAX_BYTES} from '../src/util.js';

test('isTerminal: 3500-3999, 1002, 1007; not 1000, 1006, 1009, 3000-3499', () => {
  for (const c of [3500, 3503, 3999, 1002, 1007]) assert.equal(isTerminal(c), true, String(c));
  for (const c of [0, 1000, 1001, 1006, 1009, 3000, 3001, 3002, 3499, 4000]) assert.equal(isTerminal(c), false, String(c));
});

test('toError keeps SwitchboardErrors, converts error objects and anything else', () => {
  const e = new SwitchboardError(103, 'permission denied');
  assert.equal(toError(e), e);
  const o = toError({code: 100, message: 'internal', temporary: true});
  assert.ok(o instanceof SwitchboardError);
  assert.deepEqual([o.code, o.message, o.temporary, o.name], [100, 'internal', true, 'SwitchboardError']);
  const x = toError(new Error('boom'));
  assert.deepEqual([x.code, x.message, x.temporary], ['transport', 'boom', false]);
  assert.equal(new SwitchboardError(7).message, '7');
});

test('isTokenExpired: 109, or 101 saying "token expired"', () => {
  assert.equal(isTokenExpired({code: 109, message: ''}), true);
  assert.equal(isTokenExpired({code: 101, message: 'Token Expired'}), true);
  assert.equal(isTokenExpired({code: 101, message: 'invalid token'}), false);
  assert.equal(isTokenExpired({code: 103, message: 'token expired'}), false);
});

test('errorFromBody: the JSON error, else one from the status', () => {
  assert.equal(errorFromBody('{"error":{"code":107,"message":"bad"}}', 400, 107).message, 'bad');
  const e = errorFromBody('<html>', 413, 'transport');
  assert.deepEqual([e.code, e.message, e.temporary], ['transport', 'HTTP 413', true]);
  assert.equal(errorFromBody('', 400, 107).temporary, false);
});

test('parseLines and jsonOrNull', () => {
  const out = parseLines('{"a":1}\n\n [1] \nnot json\n{"b":2}\r\n"s"');
  assert.deepEqual([...out], [{a: 1}, {b: 2}]);
  assert.equal(out.bad, 1);
  assert.equal(jsonOrNull('[1]')[0], 1);
  assert.equal(jsonOrNull('{'), null);
});

test('validChannel: non-empty, at most 255 UTF-8 bytes, no control characters', () => {
  assert.equal(validChannel('chat:lobby'), true);
  assert.equal(validChannel('é'.repeat(CHANNEL_MAX_BYTES / 2 | 0)), true);
  assert.equal(validChannel('é'.repeat(128)), false, '256 bytes');
  for (const bad of ['', 'a\nb', 'a\u007f', null, 5]) assert.equal(validChannel(bad), false, JSON.stringify(bad));
  assert.equal(byteLength('é€😀'), 2 + 3 + 4);
});

test('endpoints from http(s), ws(s) and prefixed bases', () => {
  assert.deepEqual(endpoints('https://rt.example.com/pre/'), {base: 'https://rt.example.com/pre', ws: 'wss://rt.example.com/pre/ws',
    sse: 'https://rt.example.com/pre/sse', poll: 'https://rt.example.com/pre/poll', rpc: 'https://rt.example.com/pre/rpc'});
  assert.equal(endpoints('ws://127.0.0.1:9/ws').base, 'http://127.0.0.1:9');
  assert.equal(endpoints('http://h:1/poll').ws, 'ws://h:1/ws');
});

test('randomId: hex of the length asked, different each time', () => {
  const a = randomId(8), b = randomId(8);
  assert.match(a, /^[0-9a-f]{16}$/);
  assert.notEqual(a, b);
});
