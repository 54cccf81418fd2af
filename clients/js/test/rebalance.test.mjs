// A node rebalancing after scale-out asks clients to move with a `disconnect`
// push and a close, code 3002 (issue 14): the client must treat it like 3001
// (drain): reconnect, and recover every subscription from its position, so
// nothing is lost or doubled.
//
//   node --test clients/js/test/*.test.mjs

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {FakeServer, loadClient, until, sentCommands} from './fakes.mjs';

async function setup(t) {
  const server = new FakeServer();
  const env = server.install();
  const mod = await loadClient();
  const sb = new mod.Switchboard('http://127.0.0.1:9', {env, minReconnectDelay: 100, maxReconnectDelay: 2000});
  t.after(() => { try { sb.close(); } catch (e) { /* destroyed */ } server.uninstall(); });
  return {server, sb};
}

for (const code of [3001, 3002]) {
  test(`close ${code} with its disconnect push: the client reconnects and recovers from its position`, async t => {
    const {server, sb} = await setup(t);
    const got = [];
    const disconnects = [];
    sb.on('disconnected', d => disconnects.push([d.code, d.reconnect]));
    const sub = sb.subscribe('a', {onPublication: p => got.push(p.offset)});
    sb.connect();
    await until(() => sub.state === 'subscribed', 5000, 'subscribed');
    for (let i = 1; i <= 3; i++) server.publish('a', i);
    await until(() => got.length === 3, 5000, 'three publications');
    // The node asks the client to move, then closes; publications go on meanwhile.
    const reason = code === 3002 ? 'rebalance' : 'shutdown';
    server.liveSessions()[0].push({disconnect: {code, reason, reconnect: true}});
    server.sockets[0].serverClose(code, reason);
    server.publish('a', 4);
    server.publish('a', 5);
    await until(() => server.sockets.length === 2 && sb.state === 'connected', 30000, 'reconnected');
    await until(() => got.length === 5, 5000, 'missed publications recovered');
    server.publish('a', 6);
    await until(() => got.length === 6, 5000, 'live again');
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6], 'exactly once, in order');
    assert.equal(sb.state, 'connected');
    assert.deepEqual(disconnects[0], [code, true]);
    // The new connection resumed from offset 3 in the same epoch.
    const connect = sentCommands(server.sockets[1]).find(c => c.connect);
    const since = connect.connect.subs ? connect.connect.subs.a : sentCommands(server.sockets[1]).find(c => c.subscribe).subscribe.since;
    assert.deepEqual(since, {offset: 3, epoch: 'e1'});
  });
}
