// Features of issue 15 item 3, and the helpers (backoff, batching, framing).

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {FakeServer, loadClient, advance, until, flush, sentCommands} from './fakes.mjs';

async function setup(t, opts = {}) {
  const server = new FakeServer();
  const env = server.install();
  const mod = await loadClient();
  const sb = new mod.Switchboard('http://127.0.0.1:9', {env, minReconnectDelay: 100, maxReconnectDelay: 2000, ...opts});
  t.after(() => { try { sb.close(); } catch (e) { /* destroyed */ } server.uninstall(); });
  return {server, env, sb, mod};
}

test('subscribe(channel, {since}) recovers from the position given', async t => {
  const {server, sb} = await setup(t);
  for (let i = 1; i <= 5; i++) server.publish('a', i);
  const got = [];
  const sub = sb.subscribe('a', {since: {offset: 3, epoch: 'e1'}, onPublication: p => got.push(p.offset)});
  let ctx = null;
  sub.on('subscribed', c => { ctx = c; });
  sb.connect();
  await until(() => sub.state === 'subscribed', 5000, 'subscribed');
  assert.deepEqual(got, [4, 5]);
  assert.equal(ctx.recovering, true);
  assert.equal(ctx.recovered, true);
  const connect = sentCommands(server.sockets[0]).find(c => c.connect);
  assert.deepEqual(connect.connect.subs.a, {offset: 3, epoch: 'e1'});
});

test('a subscription resubscribed after unsubscribe() keeps its position', async t => {
  const {server, sb} = await setup(t);
  const got = [];
  const sub = sb.subscribe('a', {onPublication: p => got.push(p.offset)});
  sb.connect();
  await until(() => sub.state === 'subscribed', 5000, 'subscribed');
  server.publish('a', 1);
  await until(() => got.length === 1, 5000, 'first');
  sub.unsubscribe();
  await until(() => !server.liveSessions()[0].subs.has('a'), 5000, 'unsubscribed on the server');
  server.publish('a', 2);
  server.publish('a', 3);
  const subscribing = [];
  sub.on('subscribing', c => subscribing.push(c));
  sub.subscribe();
  await sub.ready(5000).catch(() => {});
  await until(() => got.length === 3, 5000, 'the missed publications');
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(subscribing.length, 1);
  assert.equal(sb.getSubscription('a'), sub);
});

test('sub.ready() resolves when subscribed and rejects when the subscription ends', async t => {
  const {server, sb} = await setup(t);
  const sub = sb.subscribe('a');
  let ok = false;
  sub.ready().then(() => { ok = true; });
  sb.connect();
  await until(() => ok, 5000, 'ready');
  server.subscribeErrors.push([103, 'permission denied', false]);
  const denied = sb.subscribe('secret');
  let err = null;
  denied.ready().catch(e => { err = e; });
  await until(() => err !== null, 5000, 'rejected');
  assert.equal(err.code, 103);
  assert.equal(denied.state, 'unsubscribed');
});

test('subscribing event carries the code and reason when a subscription drops back', async t => {
  const {server, sb} = await setup(t);
  const sub = sb.subscribe('a');
  const events = [];
  sub.on('subscribing', c => events.push([c.code, c.reason]));
  sb.connect();
  await until(() => sub.state === 'subscribed', 5000, 'subscribed');
  server.sockets[0].serverClose(3004, 'slow consumer');
  await until(() => events.length === 1, 5000, 'subscribing');
  assert.deepEqual(events[0], [3004, 'slow consumer']);
  await until(() => sub.state === 'subscribed', 5000, 'subscribed again');
  server.liveSessions()[0].subs.delete('a');  // the node unsubscribed the session
  server.liveSessions()[0].push({channel: 'a', unsubscribe: {code: 2500, reason: 'insufficient state'}});
  await until(() => events.length === 2, 5000, 'subscribing after 2500');
  assert.deepEqual(events[1], [2500, 'insufficient state']);
  await until(() => sub.state === 'subscribed', 5000, 'resubscribed after 2500');
});

test('a connection token with a ttl is refreshed with getToken() before it expires, again and again', async t => {
  let n = 0;
  const {server, sb} = await setup(t, {getToken: async () => 'tok' + (++n)});
  server.tokenTTL = 10;
  sb.connect();
  await until(() => sb.state === 'connected', 5000, 'connected');
  const refreshes = () => sentCommands(server.sockets[0]).filter(c => c.refresh);
  await advance(7000);
  assert.equal(refreshes().length, 0, 'not before 80% of the ttl');
  await until(() => refreshes().length === 1, 2000, 'the first refresh (at 8 s of 10)');
  assert.equal(refreshes()[0].refresh.token, 'tok2');
  await until(() => refreshes().length === 2, 9000, 'the next refresh, scheduled from the refresh result');
  assert.equal(refreshes()[1].refresh.token, 'tok3');
  assert.equal(server.sockets.length, 1, 'no reconnect: the connection was refreshed in place');
  assert.equal(sb.state, 'connected');
});

test('a subscription token with a ttl is refreshed with the subscription getToken() by subRefresh', async t => {
  const {server, sb} = await setup(t);
  server.tokenTTL = 5;
  let n = 0;
  const sub = sb.subscribe('$a', {getToken: async ctx => ctx.channel + ':sub' + (++n)});
  sb.connect();
  await until(() => sub.state === 'subscribed', 5000, 'subscribed');
  const subRefreshes = () => sentCommands(server.sockets[0]).filter(c => c.subRefresh);
  await until(() => subRefreshes().length === 1, 6000, 'subRefresh before the subscription token expires');
  assert.deepEqual(subRefreshes()[0].subRefresh, {channel: '$a', token: '$a:sub2'});
  await until(() => subRefreshes().length === 2, 6000, 'and again');
  assert.equal(sub.state, 'subscribed');
});

test('getToken() gives the connection token, and a new one after 3503', async t => {
  let n = 0;
  const {server, sb} = await setup(t, {getToken: async () => 'tok' + (++n)});
  sb.connect();
  await until(() => sb.state === 'connected', 5000, 'connected');
  const first = sentCommands(server.sockets[0]).find(c => c.connect);
  assert.equal(first.connect.token, 'tok1');
  server.sockets[0].serverClose(3503, 'token expired');
  await until(() => server.sockets.length === 2 && sb.state === 'connected', 10000, 'reconnected with a new token');
  const second = sentCommands(server.sockets[1]).find(c => c.connect);
  assert.equal(second.connect.token, 'tok2');
});

for (const transport of ['websocket', 'sse']) {
  test(`getToken() is asked again after a disconnect push 3503 with reconnect false (${transport}, as a node sends it)`, async t => {
    let n = 0;
    const {server, sb} = await setup(t, {transports: [transport], getToken: async () => 'tok' + (++n)});
    sb.connect();
    await until(() => sb.state === 'connected', 5000, 'connected');
    const session = server.liveSessions()[0];
    session.push({disconnect: {code: 3503, reason: 'token expired', reconnect: false}});
    if (transport === 'websocket') server.sockets[0].serverClose(3503, 'token expired');
    await until(() => n === 2 && sb.state === 'connected', 10000, 'reconnected with a new token');
    assert.equal(server.liveSessions().length, 1);
  });
}

test('long-polling: a poll answered 401 token expired (code 109, or 101 "token expired" as nodes up to 0.1 send it) asks getToken() again', async t => {
  for (const error of [{code: 109, message: 'token expired'}, {code: 101, message: 'token expired'}]) {
    let n = 0, refused = 0;
    const {server, sb} = await setup(t, {transports: ['longpoll'], pollTimeout: 2000, getToken: async () => 'tok' + (++n)});
    server.fetchHook = (url, init) => {
      if (!url.endsWith('/poll') || init.headers.Authorization !== 'Bearer tok1' || n !== 1) return undefined;
      refused++;
      const text = JSON.stringify({error});
      return {status: 401, ok: false, text: async () => text, json: async () => JSON.parse(text)};
    };
    sb.subscribe('a');
    sb.connect();
    await until(() => n === 2 && sb.state === 'connected', 20000, `a new token after ${JSON.stringify(error)}`);
    assert.ok(refused >= 1);
    sb.close();
  }
});

test('getToken() failing is retried with backoff; no token closes', async t => {
  let calls = 0;
  const {sb} = await setup(t, {getToken: async () => { calls++; if (calls < 3) throw new Error('backend down'); return ''; }});
  sb.connect();
  await until(() => sb.state === 'closed', 20000, 'closed when getToken gives no token');
  assert.equal(calls, 3);
});

test('subscription getToken(): token sent with subscribe, renewed after 2501', async t => {
  let n = 0;
  const {server, sb} = await setup(t);
  const sub = sb.subscribe('private', {getToken: async ({channel}) => channel + '-t' + (++n)});
  sb.connect();
  await until(() => sub.state === 'subscribed', 5000, 'subscribed');
  const subs = () => server.log.filter(e => e.cmd.subscribe).map(e => e.cmd.subscribe);
  assert.equal(subs()[0].token, 'private-t1');
  server.liveSessions()[0].subs.delete('private');
  server.liveSessions()[0].push({channel: 'private', unsubscribe: {code: 2501, reason: 'token expired'}});
  await until(() => subs().length === 2 && sub.state === 'subscribed', 5000, 'resubscribed with a new token');
  assert.equal(subs()[1].token, 'private-t2');
});

test('destroy() ends subscriptions and refuses further use', async t => {
  const {sb} = await setup(t);
  const sub = sb.subscribe('a');
  sb.connect();
  await until(() => sub.state === 'subscribed', 5000, 'subscribed');
  let ended = null;
  sub.on('unsubscribed', c => { ended = c; });
  sb.destroy();
  assert.equal(sub.state, 'unsubscribed');
  assert.ok(ended);
  assert.throws(() => sb.subscribe('b'), e => e.code === 'destroyed');
  await assert.rejects(sb.publish('a', 1), e => e.code === 'destroyed');
});

test('visibilitychange to visible cuts a pending backoff short', async t => {
  const {server, sb} = await setup(t, {minReconnectDelay: 10000, maxReconnectDelay: 20000});
  sb.connect();
  await until(() => sb.state === 'connected', 5000, 'connected');
  server.refuseWs = true;
  server.sockets[0].serverClose(3000, 'normal');
  await until(() => sb.state === 'disconnected', 1000, 'disconnected');
  server.refuseWs = false;
  // A backoff of up to 10 s is pending; the page comes back.
  await flush();
  server.document.visibilityState = 'visible';
  server.fire('visibilitychange');
  await until(() => sb.state === 'connected', 500, 'connected at once');
});

test('pagehide (bfcache) suspends, pageshow persisted reconnects', async t => {
  const {server, sb} = await setup(t);
  sb.connect();
  await until(() => sb.state === 'connected', 5000, 'connected');
  server.fire('pagehide', {persisted: true});
  await flush();
  assert.equal(sb.state, 'disconnected');
  await advance(30000, 100);
  assert.equal(server.sockets.length, 1, 'no reconnect while in the cache');
  server.fire('pageshow', {persisted: true});
  await until(() => sb.state === 'connected', 500, 'connected at once');
});

test('requests made while closed reject; requests made while disconnected wait', async t => {
  const {sb} = await setup(t);
  sb.close();
  await assert.rejects(sb.ping(), e => e.code === 'closed');
  sb.connect();
  let done = false;
  sb.ping().then(() => { done = true; });
  await until(() => done, 5000, 'the ping answered once connected');
});

test('close() from inside a publication listener stops delivery', async t => {
  const {server, sb} = await setup(t);
  const got = [];
  const sub = sb.subscribe('a', {onPublication: p => { got.push(p.offset); sb.close(); }});
  sb.connect();
  await until(() => sub.state === 'subscribed', 5000, 'subscribed');
  server.publish('a', 1);
  server.publish('a', 2);
  await advance(5000);
  assert.deepEqual(got, [1]);
  assert.equal(sb.state, 'closed');
});

// -- helpers ---------------------------------------------------------------------

test('splitBatches keeps order and caps each body', async () => {
  const {splitBatches, byteLength} = await loadClient();
  const cmds = Array.from({length: 50}, (_, i) => ({id: i, publish: {channel: 'a', data: 'é'.repeat(1000 + i)}}));
  const batches = splitBatches(cmds, 8000);
  assert.deepEqual(batches.flatMap(b => b.cmds).map(c => c.id), cmds.map(c => c.id));
  for (const b of batches) {
    assert.ok(byteLength(b.text) <= 8000, 'body of ' + byteLength(b.text));
    assert.deepEqual(b.text.split('\n').map(l => JSON.parse(l).id), b.cmds.map(c => c.id));
  }
  assert.ok(batches.length > 5);
});

test('Backoff doubles up to the cap; full jitter below the cap, equal jitter above half', async () => {
  const {Backoff} = await loadClient();
  const full = new Backoff(100, 1000, () => 0.999, true);
  assert.deepEqual([1, 2, 3, 4, 5].map(() => Math.round(full.next())), [100, 200, 400, 799, 999]);
  full.reset();
  assert.equal(Math.round(full.next()), 100);
  const equal = new Backoff(100, 1000, () => 0, false);
  assert.deepEqual([1, 2, 3].map(() => equal.next()), [50, 100, 200]);
  const floored = new Backoff(100, 1000, () => 0.999, true);
  assert.equal(Math.round(floored.next(400)), 400);
});

test('parseLines takes JSON objects, one per line, and counts bad lines', async () => {
  const {parseLines} = await loadClient();
  const out = parseLines('{"a":1}\n\nnot json\n[1]\n {"b":2} \n');
  assert.deepEqual([...out], [{a: 1}, {b: 2}]);
  assert.equal(out.bad, 1);
});

test('endpoints derive ws/sse/poll/rpc from a base or a ws URL', async () => {
  const {endpoints} = await loadClient();
  assert.deepEqual(endpoints('https://rt.example.com/prefix/'), {
    base: 'https://rt.example.com/prefix', ws: 'wss://rt.example.com/prefix/ws', sse: 'https://rt.example.com/prefix/sse',
    poll: 'https://rt.example.com/prefix/poll', rpc: 'https://rt.example.com/prefix/rpc'});
  assert.equal(endpoints('ws://127.0.0.1:8000/ws').base, 'http://127.0.0.1:8000');
});

test('isTerminal: 3500-3999, 1002 and 1007 end the client; 1009 and 3000-3499 do not', async () => {
  const {isTerminal} = await loadClient();
  for (const c of [3500, 3503, 3999, 1002, 1007]) assert.equal(isTerminal(c), true, String(c));
  for (const c of [0, 1000, 1006, 1009, 3000, 3001, 3005, 3499]) assert.equal(isTerminal(c), false, String(c));
});

test('options given as undefined take their defaults', async t => {
  const {sb} = await setup(t, {transports: undefined, requestTimeout: undefined});
  assert.equal(sb.transport, 'websocket');
  assert.equal(sb._opts.requestTimeout, 20000);
});

test('hostile answers cost nothing: an error whose message is an object reconnects; a huge ping or ttl does not spin a timer', async t => {
  const server = new FakeServer();
  const env = server.install();
  // Timers longer than 2^31 - 1 ms fire at once in browsers and Node (not in the fake clock): none may be asked for.
  const delays = [];
  const setTimeout = env.setTimeout;
  env.setTimeout = (fn, ms, ...rest) => { delays.push(ms); return setTimeout(fn, ms, ...rest); };
  const mod = await loadClient();
  const sb = new mod.Switchboard('http://127.0.0.1:9', {env, minReconnectDelay: 100, maxReconnectDelay: 2000, getToken: async () => 'tok'});
  t.after(() => { try { sb.close(); } catch (e) { /* destroyed */ } server.uninstall(); });
  const handle = server.handle.bind(server);
  let hostile = 1;
  server.handle = (session, cmd) => {
    if (cmd.connect && hostile-- > 0) return {id: cmd.id, error: {code: {toString: 0}, message: {toString: 0}}};
    return handle(session, cmd);
  };
  const errors = [];
  sb.on('error', e => errors.push(e.code));
  server.ping = 1e300;  // seconds: as milliseconds, past what a timer can hold
  server.tokenTTL = 365 * 86400;  // a year: four fifths of it is past what a timer can hold
  sb.connect();
  await until(() => sb.state === 'connected', 10000, 'connected after the hostile refusal');
  assert.equal(server.sockets.length, 2, 'the refused attempt was followed by a new one');
  assert.deepEqual(errors, ['protocol']);
  await advance(3000);
  const refreshes = sentCommands(server.sockets[1]).filter(c => c.refresh);
  assert.equal(refreshes.length, 0, 'a year-long token is not refreshed at once');
  assert.equal(sb.state, 'connected', 'no watchdog fired');
  assert.ok(delays.length > 0 && delays.every(ms => !(ms > 2147483647)), `a timer past 2^31 - 1 ms: ${delays.filter(ms => !(ms <= 2147483647))}`);
});

// -- a publication past a hole -----------------------------------------------------

// A publication the node put in history but never pushed to this client: a hole in its stream.
function lose(server, name) {
  const ch = server.channel(name);
  ch.offset++;
  ch.pubs.push({offset: ch.offset, data: ch.offset});
}

const method = cmd => Object.keys(cmd).find(k => k !== 'id');

for (const transport of ['websocket', 'sse']) {
  test(`${transport}: a publication past a hole is not delivered; one resubscribe from the last position delivered brings the rest once, in order`, async t => {
    const {server, sb} = await setup(t, {transports: [transport]});
    const got = [], subscribing = [], subscribed = [];
    const sub = sb.subscribe('a', {
      onPublication: p => got.push(p.data),
      onSubscribing: c => subscribing.push(c.code),
      onSubscribed: c => subscribed.push(c.recovered),
    });
    sb.connect();
    await until(() => sub.state === 'subscribed', 5000, 'subscribed');
    server.publish('a', 1);
    await until(() => got.length === 1, 5000, 'the first publication');
    const session = server.liveSessions().find(s => s.subs.has('a'));
    const before = server.log.length;
    server.hold.add('subscribe');  // the resubscribe stays in flight until the test answers it
    lose(server, 'a');             // 2
    server.publish('a', 3);        // pushed: past the hole
    await until(() => server.log.slice(before).some(e => e.cmd.subscribe), 5000, 'the resubscribe');
    // Pushes still on their way when the node took the unsubscribe: one in order, one past another hole.
    lose(server, 'a');             // 4
    lose(server, 'a');             // 5
    session.push({channel: 'a', pub: {offset: 5, data: 5}});
    session.push({channel: 'a', pub: {offset: 4, data: 4}});
    await advance(2000);
    assert.deepEqual(got, [1], 'nothing past the hole before the recovery');
    const cmds = server.log.slice(before).map(e => e.cmd);
    assert.deepEqual(cmds.map(method), ['unsubscribe', 'subscribe'], 'one resubscribe, no second one for the second hole');
    assert.deepEqual(cmds[1].subscribe.since, {offset: 1, epoch: 'e1'}, 'from the last position delivered');
    // The node answers it (the missed ones) and goes on live.
    server.hold.clear();
    session.subs.add('a');
    session.push({id: cmds[1].id, result: server.subscribeResult('a', cmds[1].subscribe.since)});
    server.publish('a', 6);
    await until(() => got.length >= 6, 5000, 'the recovery and the next one');
    await advance(1000);
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(subscribing, [2500]);
    assert.deepEqual(subscribed, [false, true], 'the second subscribed: recovered');
    assert.equal(sub.unrecovered, false);
    assert.deepEqual(server.log.slice(before).map(e => method(e.cmd)), ['unsubscribe', 'subscribe']);
  });

  test(`${transport}: a hole the node's history lacks: one resubscribe, then unrecovered (the position jumps), no loop`, async t => {
    const {server, sb} = await setup(t, {transports: [transport]});
    const got = [], lost = [];
    const sub = sb.subscribe('a', {onPublication: p => got.push(p.data), onUnrecovered: u => lost.push(u.offset)});
    sb.connect();
    await until(() => sub.state === 'subscribed', 5000, 'subscribed');
    server.publish('a', 1);
    await until(() => got.length === 1, 5000, 'the first publication');
    const before = server.log.length;
    const ch = server.channel('a');
    ch.offset++;              // 2: in no history, never pushed
    server.publish('a', 3);   // past the hole
    await until(() => lost.length === 1, 5000, 'unrecovered');
    server.publish('a', 4);
    await until(() => got.length === 2, 5000, 'the next one');
    await advance(2000);
    assert.deepEqual(got, [1, 4]);
    assert.deepEqual(lost, [3], 'the subscription goes on from the channel\'s position');
    assert.equal(sub.unrecovered, true);
    assert.deepEqual(server.log.slice(before).map(e => method(e.cmd)).filter(m => m !== 'publish'), ['unsubscribe', 'subscribe']);
  });
}

test('longpoll: a poll answer past a hole is not delivered; the next poll asks again from the position, once; the rest comes once, in order', async t => {
  const {server, sb} = await setup(t, {transports: ['longpoll'], pollTimeout: 5000});
  const got = [];
  const sub = sb.subscribe('a', {onPublication: p => got.push(p.data)});
  sb.connect();
  await until(() => sub.state === 'subscribed', 30000, 'subscribed');
  server.publish('a', 1);
  await until(() => got.length === 1, 30000, 'the first publication');
  const polls = [];
  let release = null;
  server.fetchHook = (url, init) => {
    if (!url.endsWith('/poll')) return undefined;
    const since = JSON.parse(init.body).subs.a;
    polls.push(since.offset);
    if (polls.length > 20) return new Promise(() => {});  // a poll loop: stopped here, the test fails
    if (polls.length === 1) {
      // The held poll, woken: an answer that skips 2, with a second hole and its paging position.
      const items = [{channel: 'a', pub: {offset: 3, data: 3}}, {channel: 'a', pub: {offset: 5, data: 5}},
        {channel: 'a', position: {offset: 5, epoch: 'e1'}}];
      return {status: 200, ok: true, text: async () => JSON.stringify(items)};
    }
    if (polls.length === 2) return new Promise(r => { release = r; });  // the poll that asks again, held a while
    return undefined;
  };
  lose(server, 'a');
  lose(server, 'a');
  lose(server, 'a');
  server.publish('a', 5);  // wakes the held poll
  await until(() => release !== null, 30000, 'the poll that asks again');
  await advance(1000);
  assert.deepEqual(got, [1], 'nothing past the hole before the recovery');
  assert.deepEqual(polls, [1, 1], 'asked again from the last position delivered');
  release(undefined);  // the fake node answers it from history
  await until(() => got.length === 5, 30000, 'the recovery');
  await advance(1000);
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  assert.equal(sub.unrecovered, false);
  assert.deepEqual(polls.slice(0, 3), [1, 1, 5]);
});

test('longpoll: a hole the node\'s history lacks: asked again once, then unrecovered, and polling goes on (no poll loop)', async t => {
  const {server, sb} = await setup(t, {transports: ['longpoll'], pollTimeout: 5000});
  const got = [], lost = [];
  const sub = sb.subscribe('a', {onPublication: p => got.push(p.data), onUnrecovered: u => lost.push(u.offset)});
  sb.connect();
  await until(() => sub.state === 'subscribed', 30000, 'subscribed');
  server.publish('a', 1);
  await until(() => got.length === 1, 30000, 'the first publication');
  const polls = [];
  server.fetchHook = (url, init) => {
    if (!url.endsWith('/poll')) return undefined;
    polls.push(JSON.parse(init.body).subs.a.offset);
    return polls.length > 20 ? new Promise(() => {}) : undefined;  // a poll loop: stopped here, the test fails
  };
  server.channel('a').offset++;  // 2: in no history
  server.publish('a', 3);
  await until(() => got.length === 2, 30000, 'the one after the hole');
  await advance(3000);
  assert.deepEqual(got, [1, 3]);
  assert.deepEqual(lost, [2]);
  assert.equal(polls.filter(o => o === 1).length, 2, 'the woken poll and one that asked again: ' + polls);
  assert.ok(polls.slice(2).every(o => o === 3), 'then on from the new position: ' + polls);
});

test('sse: after a hole, a stream cut before the resubscribe reply does not resume from the event id (ahead of what was delivered)', async t => {
  const {server, sb} = await setup(t, {transports: ['sse']});
  server.sseResumeIds = true;
  const got = [], lost = [];
  const sub = sb.subscribe('a', {onPublication: p => got.push(p.data), onUnrecovered: u => lost.push(u.offset)});
  sb.connect();
  await until(() => sub.state === 'subscribed', 5000, 'subscribed');
  server.publish('a', 1);
  await until(() => got.length === 1, 5000, 'the first publication');
  server.hold.add('unsubscribe');
  server.hold.add('subscribe');
  lose(server, 'a');        // 2
  server.publish('a', 3);   // its event id says a: 3; the client delivered up to 1
  await until(() => server.log.some(e => e.cmd.subscribe), 5000, 'the resubscribe');
  server.hold.clear();
  const first = server.eventSources.length;
  server.eventSources.at(-1).serverEnd();
  await until(() => server.eventSources.length > first && sub.state === 'subscribed', 10000, 'subscribed again');
  server.publish('a', 4);
  await until(() => got.length >= 4, 5000, 'the rest');
  await advance(1000);
  assert.equal(server.eventSources.at(-1).headers['Last-Event-ID'], undefined);
  assert.deepEqual(server.eventSources.at(-1).params.subs, {a: {offset: 1, epoch: 'e1'}});
  assert.deepEqual(got, [1, 2, 3, 4]);
  assert.deepEqual(lost, []);
});
