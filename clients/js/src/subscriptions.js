// The client's side of subscriptions: subscribe commands and their results
// (recovery, `unrecovered`, the pushes held before a reply), retries with
// their own backoff, subscription token refresh, unsubscribe (also while
// connecting), pushes routed to their subscription, and long-polling's
// channel set and poll items.
//
// These are methods of Switchboard (`this` is the client) kept in their own
// module: client.js installs them on Switchboard.prototype. What they use of
// the client: `_subs` (channel -> Subscription), `_conn` (the connection, or
// null), `_call` (the request queue), `_failConn`, `_destroyed`, `_log`,
// `_after`/`_clear` (timers) and `transport`.

import {SwitchboardError, toError, refreshDelay} from './errors.js';

/** Subscription handling, installed on Switchboard.prototype (see installSubscriptionMethods). */
export class SubscriptionMethods {
  // Every live subscription back to `subscribing`; returns those that were subscribed.
  _dropSubs() {
    const dropped = [];
    for (const sub of this._subs.values()) {
      if (sub.state === 'unsubscribed') continue;
      if (sub.state === 'subscribed') dropped.push(sub);
      sub.state = 'subscribing';
      sub._gen++;
      sub._buffer = [];
      sub._lpGap = null;
      this._clear(sub._refreshTimer);
      sub._refreshTimer = null;
    }
    return dropped;
  }

  _emitSubscribing(subs, code, reason) {
    for (const sub of subs) {
      if (sub.state !== 'subscribing') continue;
      sub._emit('subscribing', {channel: sub.channel, code, reason});
    }
  }

  _posFor(sub) {
    const p = sub._pos;
    return p && typeof p.offset === 'number' && typeof p.epoch === 'string' ? {offset: p.offset, epoch: p.epoch} : null;
  }

  _channelPush(sub, obj) {
    if (obj.pub) sub._deliver(obj.pub);
    else if (obj.join) sub._emit('join', {channel: sub.channel, ...obj.join});
    else if (obj.leave) sub._emit('leave', {channel: sub.channel, ...obj.leave});
    else if (obj.unsubscribe) {
      const u = obj.unsubscribe;
      if (u.code === 2500 || (u.code === 2501 && sub._getToken)) {
        // 2500 insufficient state: subscribe again from our position. 2501 token expired: with a new token.
        if (sub.state === 'subscribing' && sub._sentOn === this._conn) {
          // A subscribe of ours is in flight on this connection (made again after a hole): the push
          // is about the subscription it replaces (a reply comes before any push about the one it
          // makes), and that subscribe brings the recovery; a second would be refused (105).
          if (u.code === 2501) sub._token = null;
          return;
        }
        this._log('resubscribe after', u.code, sub.channel);
        if (u.code === 2501) sub._token = null;
        this._resubscribeFrom(sub, u.code, u.reason || '');
      } else {
        this._unsubscribe(sub, u.code, u.reason || 'unsubscribed by server', true);
      }
    }
  }

  // Back to `subscribing`, and a subscribe from the position (its reply: the missed publications, or
  // `recovered: false`). Pushes that come meanwhile are held until that reply (client.js), which sorts
  // them out: nothing is delivered twice or out of order.
  _resubscribeFrom(sub, code, reason) {
    const was = sub.state;
    sub.state = 'subscribing';
    sub._gen++;
    if (was === 'subscribed') sub._emit('subscribing', {channel: sub.channel, code, reason});
    this._sendSubscribe(sub);
  }

  // A live publication past the next offset (Subscription#_deliver did not deliver it): the node let a
  // hole through. Recovered as after an `unsubscribe` push 2500: the subscription is made again from
  // the last position delivered (over WebSocket and SSE an `unsubscribe` goes first, since the node
  // still has the subscription and would refuse a second one with 105; over long-polling the next
  // poll carries the position). One at a time: while it is being made again the subscription is
  // `subscribing`, its pushes are held (or, long-polling, the rest of the answer is skipped), and
  // further holes cost nothing more. A recovery that has the hole too is taken as `recovered: false`
  // (`unrecovered`, the position jumps), so a node that cannot fill it makes no resubscribe loop.
  _onGap(sub, pub) {
    if (sub.state !== 'subscribed') return;  // being made again already: its recovery brings this one too
    const reason = 'gap: offset ' + pub.offset + ' after ' + (sub._pos && sub._pos.offset);
    const conn = this._conn;
    if (conn && conn.name === 'longpoll') { this._pollGap(sub, reason); return; }
    if (conn && conn.connected) this._call('unsubscribe', {channel: sub.channel}, true).catch(() => {});
    this._resubscribeFrom(sub, 2500, reason);
  }

  // A `recovered: true` result must continue the position with no hole: every offset after it, up to
  // the result's `offset`. One with a hole (the node never sends one: "never a partial list") is taken
  // as `recovered: false` rather than delivered through.
  _recoveryHasHole(sub, res) {
    const pos = this._posFor(sub);
    if (!pos || (res.epoch !== undefined && res.epoch !== pos.epoch)) return false;
    let last = pos.offset;
    for (const pub of Array.isArray(res.publications) ? res.publications : []) {
      if (!pub || typeof pub.offset !== 'number' || pub.offset <= last) continue;
      if (pub.offset !== last + 1) return true;
      last = pub.offset;
    }
    return typeof res.offset === 'number' && res.offset > last;
  }

  // A subscription to make on the current connection, now or when it is up.
  _kickSubscribe(sub) {
    const conn = this._conn;
    if (!conn || !conn.connected) return;
    if (conn.name === 'longpoll') conn.restartPoll();
    else this._sendSubscribe(sub);
  }

  _resubscribe(sub) {
    if (this._destroyed) throw new SwitchboardError('destroyed', 'client destroyed');
    if (sub.state !== 'unsubscribed') return;
    if (this._subs.has(sub.channel)) throw new SwitchboardError(105, 'already subscribed to ' + sub.channel);
    sub.state = 'subscribing';
    sub._gen++;
    sub._buffer = [];
    this._subs.set(sub.channel, sub);
    sub._emit('subscribing', {channel: sub.channel, code: 0, reason: 'subscribe called'});
    if (this._subs.get(sub.channel) === sub && sub.state === 'subscribing') this._kickSubscribe(sub);
  }

  _sendSubscribe(sub, force = false) {
    const conn = this._conn;
    if (!conn || !conn.connected || conn.name === 'longpoll' || sub.state === 'unsubscribed') return;
    if (!conn.subsSettled && !force) return;  // the connect reply's handling sends it
    this._clear(sub._retry);
    sub._retry = null;
    sub.state = 'subscribing';
    const gen = ++sub._gen;
    sub._buffer = [];
    sub._sentOn = conn;
    const since = this._posFor(sub);
    sub._since = since;
    const send = token => {
      if (this._conn !== conn || sub._gen !== gen || sub.state !== 'subscribing') return;
      const params = {channel: sub.channel};
      if (since) params.since = since;
      if (token) params.token = token;
      this._call('subscribe', params, true).then(
        res => this._onSubscribeResult(sub, gen, since, res),
        err => this._onSubscribeError(sub, gen, err, conn));
    };
    if (sub._getToken && !sub._token) {
      Promise.resolve().then(() => sub._getToken({channel: sub.channel})).then(token => {
        if (typeof token !== 'string' || !token) {
          if (sub._gen === gen) this._unsubscribe(sub, 'unauthorized', 'getToken gave no token', true);
          return;
        }
        sub._token = token;
        send(token);
      }, err => this._onSubscribeError(sub, gen, new SwitchboardError('transport', 'getToken failed: ' + (err && err.message || err), true), conn));
    } else {
      send(sub._token);
    }
  }

  _onSubscribeResult(sub, gen, since, res) {
    if (sub.state === 'unsubscribed' || gen !== sub._gen) return;
    const recovering = !!since;
    let recovered = recovering && res.recovered === true;
    if (recovered && this._recoveryHasHole(sub, res)) {
      this._log('recovery of', sub.channel, 'from', since.offset, 'has a hole: taken as not recovered');
      recovered = false;
    }
    sub._backoff.reset();
    if (!recovered) sub._pos = typeof res.offset === 'number' ? {offset: res.offset, epoch: res.epoch} : null;
    // Order: `unrecovered` first, then the recovered publications, `subscribed`, then the held pushes.
    if (recovering && !recovered) {
      sub.unrecovered = true;
      sub._emit('unrecovered', {channel: sub.channel, offset: res.offset, epoch: res.epoch});
      if (sub.state === 'unsubscribed' || gen !== sub._gen) return;
    }
    if (recovered) {
      for (const pub of Array.isArray(res.publications) ? res.publications : []) {
        sub._deliver(pub, res.epoch);
        if (sub.state === 'unsubscribed' || gen !== sub._gen) return;
      }
      if (typeof res.offset === 'number' && sub._pos && res.offset > sub._pos.offset) sub._pos.offset = res.offset;
    }
    sub.state = 'subscribed';
    if (res.expires && typeof res.ttl === 'number' && sub._getToken) this._scheduleSubRefresh(sub, gen, res.ttl);
    const buffered = sub._buffer;
    sub._buffer = [];
    sub._emit('subscribed', {channel: sub.channel, recovering, recovered, offset: res.offset, epoch: res.epoch, transport: this.transport});
    for (const obj of buffered) {
      if (sub.state !== 'subscribed' || gen !== sub._gen) return;
      this._channelPush(sub, obj);
    }
  }

  _scheduleSubRefresh(sub, gen, ttl) {
    this._clear(sub._refreshTimer);
    const conn = this._conn;
    const ms = refreshDelay(ttl);
    if (ms === null) return;
    sub._refreshTimer = this._after(ms, async () => {
      sub._refreshTimer = null;
      if (sub._gen !== gen || this._conn !== conn) return;
      try {
        const token = await sub._getToken({channel: sub.channel});
        if (sub._gen !== gen || typeof token !== 'string' || !token) return;
        sub._token = token;
        const r = await this._call('subRefresh', {channel: sub.channel, token}, true);
        if (sub._gen === gen && r && r.expires && typeof r.ttl === 'number') this._scheduleSubRefresh(sub, gen, r.ttl);
      } catch (e) { this._log('subscription token refresh failed', e); }
    });
  }

  _onSubscribeError(sub, gen, err, conn) {
    if (sub.state === 'unsubscribed' || gen !== sub._gen) return;
    err = toError(err);
    if (err.code === 'closed') return;  // the next connection re-subscribes
    if (err.code === 'timeout') {
      // No reply on a live connection: it is not healthy. Remake it (centrifuge does the same).
      if (conn && this._conn === conn) this._failConn(conn, 'subscribe to ' + sub.channel + ' timed out');
      return;
    }
    if (err.code === 109 && sub._getToken) { sub._token = null; err = new SwitchboardError(109, err.message, true); }
    sub._emit('error', err);
    if (sub.state === 'unsubscribed' || gen !== sub._gen) return;
    if (err.temporary || err.code === 100 || err.code === 'transport') {
      const delay = sub._backoff.next();
      this._log('subscribe to', sub.channel, 'failed (' + err.code + '): again in', Math.round(delay), 'ms');
      this._clear(sub._retry);
      sub._retry = this._after(delay, () => {
        sub._retry = null;
        if (sub._gen === gen && sub.state === 'subscribing') this._sendSubscribe(sub);
      });
      return;
    }
    this._unsubscribe(sub, err.code, err.message, true);
  }

  _unsubscribe(sub, code, reason, byServer) {
    if (sub.state === 'unsubscribed') return;
    sub.state = 'unsubscribed';
    sub._gen++;
    sub._buffer = [];
    sub._lpGap = null;
    this._clear(sub._retry);
    sub._retry = null;
    this._clear(sub._refreshTimer);
    sub._refreshTimer = null;
    if (this._subs.get(sub.channel) === sub) this._subs.delete(sub.channel);
    const conn = this._conn;
    // While connecting nothing is sent: the connect reply's handling unsubscribes what the connect request subscribed.
    if (conn && conn.connected) {
      if (conn.name === 'longpoll') conn.restartPoll();
      else if (!byServer) this._call('unsubscribe', {channel: sub.channel}, true).catch(() => {});
    }
    sub._emit('unsubscribed', {channel: sub.channel, code, reason});
  }

  // Long-polling: the subscription tokens the next poll carries, asked of each
  // subscription's getToken that has none (all at once, each within
  // requestTimeout). A subscription whose getToken fails or times out is left
  // out of the polls and tried again after its backoff; one that gives no
  // token ends, as over WebSocket.
  async _pollTokens() {
    const need = [];
    for (const sub of this._subs.values()) {
      if (sub.state !== 'unsubscribed' && sub._getToken && !sub._token && !sub._retry) need.push(sub);
    }
    if (!need.length) return;
    const limit = (this._opts && this._opts.requestTimeout) || 10000;
    await Promise.all(need.map(async sub => {
      const gen = sub._gen;
      let timer = null, token;
      try {
        token = await Promise.race([
          Promise.resolve().then(() => sub._getToken({channel: sub.channel})),
          new Promise((_, reject) => { timer = this._after(limit, () => reject(new Error('no token within ' + limit + ' ms'))); }),
        ]);
      } catch (e) {
        if (sub._gen === gen && sub.state !== 'unsubscribed') {
          this._pollRetryLater(sub, new SwitchboardError('transport', 'getToken failed: ' + (e && e.message || e), true));
        }
        return;
      } finally {
        this._clear(timer);
      }
      if (sub._gen !== gen || sub.state === 'unsubscribed') return;
      if (typeof token !== 'string' || !token) { this._unsubscribe(sub, 'unauthorized', 'getToken gave no token', true); return; }
      sub._token = token;
    }));
  }

  // Long-polling: a subscription that could not be polled now (no token, or
  // one the node found expired) waits for its backoff, then polls again.
  _pollRetryLater(sub, err) {
    sub._emit('error', err);
    if (sub.state === 'unsubscribed') return;
    const delay = sub._backoff.next();
    this._log('poll of', sub.channel, 'failed (' + err.code + '): again in', Math.round(delay), 'ms');
    this._clear(sub._retry);
    sub._retry = this._after(delay, () => {
      sub._retry = null;
      if (sub.state !== 'unsubscribed') this._kickSubscribe(sub);  // on whichever connection is current
    });
  }

  // Long-polling: the `subs` of the next poll, and the subscriptions that have
  // no position yet (`probe`). Subscriptions with a position count as
  // (re)subscribed once polled from it (a `position` with recovered: false
  // says otherwise); new ones wait for their `position`. A subscription that
  // needs a token and has none yet is left out until it has one.
  _pollSubs(conn) {
    const subs = Object.create(null), probe = [], now = [];  // a channel may be named `__proto__`
    for (const sub of this._subs.values()) {
      if (sub.state === 'unsubscribed') continue;
      if (sub._retry) continue;  // refused for now (or no token yet): polled again after its backoff
      if (sub._getToken && !sub._token) continue;
      const pos = this._posFor(sub);
      subs[sub.channel] = pos ? {...pos} : {};
      if (sub._token) subs[sub.channel].token = sub._token;
      // After a hole: this poll asks again from the position; its answer settles it (see _pollItem).
      if (sub._lpGap === 'pending') sub._lpGap = 'polled';
      else if (sub._lpGap === 'polled') sub._lpGap = null;
      if (sub.state === 'subscribing' && sub._lpConn !== conn) {
        sub._lpConn = conn;
        sub._since = pos;
        if (pos) { sub.state = 'subscribed'; now.push([sub, pos]); }
      }
      if (sub.state === 'subscribing' && !pos) probe.push(sub);
    }
    for (const [sub, pos] of now) {
      if (this._conn !== conn || sub.state !== 'subscribed') continue;
      sub._emit('subscribed', {channel: sub.channel, recovering: true, recovered: true, offset: pos.offset, epoch: pos.epoch, transport: 'longpoll'});
    }
    return {subs, probe};
  }

  // After a timeout-0 poll: a channel that got no `position` keeps no history (no offsets); it is followed as is.
  _pollProbed(probe) {
    for (const sub of probe) {
      if (sub.state !== 'subscribing' || this._subs.get(sub.channel) !== sub) continue;
      sub.state = 'subscribed';
      sub._emit('subscribed', {channel: sub.channel, recovering: false, recovered: false, offset: undefined, epoch: undefined, transport: 'longpoll'});
    }
  }

  // One item of a poll answer. Sets `_pollMoved` when it changed anything (a publication delivered,
  // a position or state that moved, a refusal): a quick answer that moved nothing is not polled again at once.
  _pollItem(conn, sub, item) {
    if (item.position) {
      const p = item.position;
      if (sub._lpGap === 'pending' && p.recovered !== false) return;  // after a hole in this answer: the next poll asks again
      sub._backoff.reset();
      const had = this._posFor(sub);
      if (had && p.recovered !== false && typeof p.offset === 'number' && p.epoch === had.epoch && p.offset > had.offset) {
        // A position past the last publication delivered, and not `recovered: false`: a hole, as a
        // publication past it would be. Asked again from the position first; a second time, lost for good.
        if (sub._lpGap === 'polled') this._pollLost(conn, sub, {offset: p.offset, epoch: p.epoch});
        else this._onGap(sub, {offset: p.offset});
        return;
      }
      if (p.recovered === false) sub._lpGap = null;
      const gen = sub._gen;
      sub._pos = typeof p.offset === 'number' ? {offset: p.offset, epoch: p.epoch} : null;
      if (sub.state === 'subscribing' || p.recovered === false || !had || !sub._pos || had.offset !== sub._pos.offset || had.epoch !== sub._pos.epoch) {
        this._pollMoved = true;
      }
      if (had && p.recovered === false) {
        sub.unrecovered = true;
        sub._emit('unrecovered', {channel: sub.channel, offset: p.offset, epoch: p.epoch});
        // A listener may have unsubscribed, or closed the client: then this position is stale news.
        if (sub.state === 'unsubscribed' || sub._gen !== gen || this._conn !== conn) return;
      }
      if (sub.state === 'subscribing' || had) {
        const first = sub.state === 'subscribing';
        sub.state = 'subscribed';
        if (first || p.recovered === false) {
          sub._emit('subscribed', {channel: sub.channel, recovering: !!had, recovered: !had ? false : p.recovered !== false,
            offset: p.offset, epoch: p.epoch, transport: 'longpoll'});
        }
      }
    } else if (item.pub) {
      if (sub._lpGap === 'pending') return;  // after a hole in this answer: the next poll asks again from the position
      if (sub.state === 'subscribing') sub.state = 'subscribed';
      sub._backoff.reset();
      const had = this._posFor(sub);
      if (sub._lpGap === 'polled' && had && typeof item.pub.offset === 'number' && item.pub.offset > had.offset) {
        // The answer to the poll that asked again from the position: it goes on from there, or it
        // skips the same hole, which the channel's history does not hold then: lost for good.
        sub._lpGap = null;
        if (item.pub.offset > had.offset + 1 && !this._pollLost(conn, sub, {offset: item.pub.offset - 1, epoch: had.epoch})) return;
      }
      if (sub._deliver(item.pub)) this._pollMoved = true;
    } else if (item.error) {
      this._pollMoved = true;
      const err = toError(item.error);
      if (err.code === 109 && sub._getToken) {
        // Its token expired: poll again, from the same position, with a new one, after the backoff
        // (a getToken that keeps giving expired tokens must not make a poll loop).
        sub._token = null;
        this._pollResubscribe(sub, 109, err.message);
        this._pollRetryLater(sub, new SwitchboardError(109, err.message, true));
        return;
      }
      if (err.temporary || err.code === 100 || err.code === 111) {
        // Refused for now (the node's broker, a rate limit): out of the polls for the backoff, then
        // on from the same position, as a subscribe is retried over WebSocket.
        this._pollResubscribe(sub, err.code, err.message);
        this._pollRetryLater(sub, new SwitchboardError(err.code, err.message, true));
        return;
      }
      sub._emit('error', err);
      this._unsubscribe(sub, err.code, err.message, true);
    } else if (item.unsubscribe) {
      this._pollMoved = true;
      const u = item.unsubscribe;
      if (u.code === 2500 || (u.code === 2501 && sub._getToken)) {
        // 2500 insufficient state (e.g. the channel's epoch changed under a held poll): as over
        // WebSocket, subscribe again from our position, which here is the next poll: its `position`
        // says `recovered: false` (then `unrecovered`), or its publications continue the stream.
        // 2501 token expired during the poll: the same, with a new token.
        this._log('resubscribe after', u.code, sub.channel);
        if (u.code === 2501) sub._token = null;
        this._pollResubscribe(sub, u.code, u.reason || '');
      } else {
        this._unsubscribe(sub, u.code, u.reason || 'unsubscribed by server', true);
      }
    }
  }

  // Long-polling after a hole (_onGap): back to `subscribing` as after 2500; the rest of this answer
  // is skipped for it and the next poll, at once, asks again from the position.
  _pollGap(sub, reason) {
    sub._lpGap = 'pending';
    this._pollMoved = true;
    this._pollResubscribe(sub, 2500, reason);
  }

  // Long-polling: asked again from its position, the node still answers past the hole: what lies in
  // it is not in the channel's history. As a `position` with `recovered: false`: `unrecovered`, then
  // `subscribed`, and the subscription goes on from `pos`. False when a listener moved it on meanwhile.
  _pollLost(conn, sub, pos) {
    const gen = sub._gen;
    sub._lpGap = null;
    sub._pos = {offset: pos.offset, epoch: pos.epoch};
    sub.unrecovered = true;
    this._pollMoved = true;
    sub._emit('unrecovered', {channel: sub.channel, offset: pos.offset, epoch: pos.epoch});
    if (sub.state === 'unsubscribed' || sub._gen !== gen || this._conn !== conn) return false;
    sub.state = 'subscribed';
    sub._emit('subscribed', {channel: sub.channel, recovering: true, recovered: false, offset: pos.offset, epoch: pos.epoch, transport: 'longpoll'});
    return !(sub.state === 'unsubscribed' || sub._gen !== gen || this._conn !== conn);
  }

  // Long-polling: back to `subscribing`; the next poll that carries it makes it `subscribed` again.
  _pollResubscribe(sub, code, reason) {
    const was = sub.state;
    sub.state = 'subscribing';
    sub._gen++;
    sub._lpConn = null;
    if (was === 'subscribed') sub._emit('subscribing', {channel: sub.channel, code, reason});
  }
}

/** Define SubscriptionMethods' methods on `proto` (non-enumerable, like class methods); a name already there is a bug. */
export function installSubscriptionMethods(proto) {
  for (const name of Object.getOwnPropertyNames(SubscriptionMethods.prototype)) {
    if (name === 'constructor') continue;
    if (Object.prototype.hasOwnProperty.call(proto, name)) throw new Error('subscriptions.js: ' + name + ' is already defined');
    Object.defineProperty(proto, name, Object.getOwnPropertyDescriptor(SubscriptionMethods.prototype, name));
  }
}
