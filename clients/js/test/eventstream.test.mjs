// src/eventstream.js: the text/event-stream parser, fed the same stream in
// every awkward split (byte by byte, every two-way split, random splits).

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {EventStreamParser, resumeIdPositions} from '../src/eventstream.js';

const STREAM = '\uFEFF: a comment\r\n'
  + 'data: {"id":1,"result":{"session":"s"}}\r\nid: eyJhIjp7fX0\r\n\r\n'
  + 'data:{"channel":"caf\u00e9:\u20ac","pub":{"data":"\uD83D\uDE00 \u4e2d"}}\nid: 2\n\n'
  + 'data: line one\rdata: line two\rid\r\r'        // bare CRs; `id` with no colon resets the id
  + 'event: ignored\nretry: 5\nfoo: bar\n\n'          // no data: no event
  + 'data\n\n'                                       // `data` alone: one empty line
  + 'id: 7\u0000x\ndata: nul id ignored\n\n'
  + 'data: never ended';                             // no blank line before the end: dropped
const WANT = [
  {data: '{"id":1,"result":{"session":"s"}}', id: 'eyJhIjp7fX0'},
  {data: '{"channel":"caf\u00e9:\u20ac","pub":{"data":"\uD83D\uDE00 \u4e2d"}}', id: '2'},
  {data: 'line one\nline two', id: ''},
  {data: '', id: ''},
  {data: 'nul id ignored', id: ''},
];
const BYTES = new TextEncoder().encode(STREAM);

function run(chunks) {
  const got = [];
  const p = new EventStreamParser(e => got.push(e));
  for (const c of chunks) p.push(c);
  p.end();
  return got;
}

test('eventstream: one chunk, byte by byte, and every split in two give the same events', () => {
  assert.deepEqual(run([BYTES]), WANT);
  assert.deepEqual(run(Array.from(BYTES, (_, i) => BYTES.slice(i, i + 1))), WANT);
  for (let i = 0; i <= BYTES.length; i++) {
    assert.deepEqual(run([BYTES.slice(0, i), BYTES.slice(i)]), WANT, 'split at ' + i);
  }
});

test('eventstream: random splits, including empty chunks, give the same events', () => {
  let seed = 12345;
  const rnd = n => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  for (let round = 0; round < 300; round++) {
    const chunks = [];
    for (let i = 0; i < BYTES.length;) { const n = rnd(7); chunks.push(BYTES.slice(i, i + n)); i += n; }
    assert.deepEqual(run(chunks), WANT, 'round ' + round);
  }
});

test('eventstream: a CR at a chunk end waits for the next chunk (CRLF is one line end, not two)', () => {
  const enc = s => new TextEncoder().encode(s);
  assert.deepEqual(run([enc('data: a\r'), enc('\ndata: b\r'), enc('\n\r'), enc('\n')]), [{data: 'a\nb', id: ''}]);
});

test('eventstream: a line or an event past the cap throws rather than growing', () => {
  const p = new EventStreamParser(() => {}, 64);
  assert.throws(() => p.push(new TextEncoder().encode('data: ' + 'x'.repeat(100))), /longer than 64/);
  const q = new EventStreamParser(() => {}, 64);
  assert.throws(() => { for (let i = 0; i < 20; i++) q.push(new TextEncoder().encode('data: xxxxxx\n')); }, /larger than 64/);
});

test('eventstream: resume ids decode to positions; anything else is null', () => {
  const id = Buffer.from(JSON.stringify({'chat:\u00e9': {offset: 3, epoch: 'e'}, b: {}})).toString('base64url');
  assert.deepEqual(resumeIdPositions(id), {'chat:\u00e9': {offset: 3, epoch: 'e'}, b: {}});
  for (const bad of ['', 'x', '!!!', Buffer.from('[1]').toString('base64url'), Buffer.from('null').toString('base64url'), null, 5]) {
    assert.equal(resumeIdPositions(bad), null, String(bad));
  }
});
