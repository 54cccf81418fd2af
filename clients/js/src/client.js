// The client: Switchboard, the shell around the connection state machine.
// The decisions (the state, the transport ladder with its fallback and climb
// back to WebSocket, reconnect or stop, the backoff) are in connection.js
// (ConnectionMachine, pure); this file runs what it decides: the connection
// attempts (one transport object each), timers, the page and network
// events, the listeners, and puts the subscriptions and the request queue
// on whatever connection is up. Its subscription handling is in
// subscriptions.js (methods installed on Switchboard.prototype below).

import {SwitchboardError, toError, refreshDelay} from './errors.js';
import {makeEnv} from './env.js';
import {VERSION, ALL_TRANSPORTS, CONNECT_ID, STABLE_MS, MAX_HELD, randomId, validChannel, endpoints} from './util.js';
import {Backoff} from './backoff.js';
import {ConnectionMachine} from './connection.js';
import {RequestQueue} from './queue.js';
import {Emitter} from './emitter.js';
import {Subscription} from './subscription.js';
import {installSubscriptionMethods} from './subscriptions.js';
import {TRANSPORT_CLASSES} from './transports/index.js';

// ===========================================================================
// The connection state machine (ConnectionMachine in connection.js; its
// public projection):
//
//   disconnected --connect()--> connecting --connect reply--> connected
//   connecting/connected --connection over--> disconnected (timer) --> connecting
//   connecting/connected --terminal code--> closed
//   any --close()--> closed --connect()--> connecting
//   any --destroy()--> closed for good
//
// Every transition that runs listeners checks afterwards that no listener
// changed the state (close(), destroy(), connect() from inside a listener
// win over what the transition would have done next): the machine's
// `epoch` (this._lc) is read before the listeners and compared after.
// ===========================================================================

/**
 * @typedef {Object} SwitchboardOptions
 * @property {string[]} [transports]  order of preference, default ['websocket', 'sse', 'longpoll']
 * @property {string} [token]         connection JWT
 * @property {() => Promise<string>|string} [getToken]  asked for a connection token before connecting when
 *   there is none, and again when the token expired (3503 / error 109)
 * @property {string} [name]          client name sent in `connect`
 * @property {number} [minReconnectDelay]  ms, default 500
 * @property {number} [maxReconnectDelay]  ms, default 20000
 * @property {number} [pollTimeout]   ms the server may hold a long-poll, default 25000 (sent in whole seconds, 0-60)
 * @property {number} [connectTimeout]  ms to wait for the connect reply, default 10000
 * @property {number} [requestTimeout]  ms a publish/history/presence call may take, reconnects included, default 20000
 * @property {number} [maxMessageSize]  bytes: no frame or request body is larger (the node's limit), default 65536
 * @property {number} [idlePing]  ms: with a node that sends no pings (its `ping` is 0), the client sends a `ping`
 *   after this long without hearing from it (WebSocket, SSE) and reconnects when nothing comes within 5 s more,
 *   default 25000 (0: never)
 * @property {number} [upgradeInterval]  ms between attempts to climb back to the first transport after a fallback,
 *   default 60000 (0: never)
 * @property {SwitchboardEnv} [env]  replace browser objects (tests)
 * @property {boolean|Function} [debug]  log to console.debug (or to the function given)
 */

/**
 * A Switchboard connection with automatic transport fallback, reconnect and
 * exactly-once recovery of subscriptions.
 *
 * Events (`on(event, fn)`):
 * - `state`: `{state, transport}`; state is 'disconnected' | 'connecting' | 'connected' | 'closed'
 * - `connected`: the connect result (`client`, `node`, `ping`, ... plus `transport`)
 * - `disconnected`: `{code, reason, reconnect, transport}` each time a connection or an attempt ends
 * - `error`: a {@link SwitchboardError} that belongs to no request
 */
export class Switchboard extends Emitter {
  /**
   * @param {string} [url]  base URL of a node or balancer (http(s)://host:port); default the page's origin
   * @param {SwitchboardOptions} [options]
   */
  constructor(url, options) {
    super();
    if (url && typeof url === 'object' && options === undefined) { options = url; url = undefined; }
    const o = Object.assign({
      transports: ALL_TRANSPORTS.slice(), token: undefined, getToken: undefined, name: undefined,
      minReconnectDelay: 500, maxReconnectDelay: 20000, pollTimeout: 25000,
      connectTimeout: 10000, requestTimeout: 20000, maxMessageSize: 65536, upgradeInterval: 60000, idlePing: 25000, debug: false,
    }, Object.fromEntries(Object.entries(options || {}).filter(([, v]) => v !== undefined)));  // undefined: the default
    this._env = makeEnv(o.env);
    const env = this._env;
    let ts = (Array.isArray(o.transports) ? o.transports : String(o.transports).split(','))
      .map(t => String(t).trim().toLowerCase()).map(t => (t === 'ws' ? 'websocket' : t === 'poll' || t === 'long-polling' ? 'longpoll' : t))
      .filter((t, i, a) => ALL_TRANSPORTS.includes(t) && a.indexOf(t) === i);
    if (typeof env.WebSocket !== 'function') ts = ts.filter(t => t !== 'websocket');
    if (typeof env.ReadableStream !== 'function') ts = ts.filter(t => t !== 'sse');  // the stream is read from fetch's body
    if (typeof env.fetch !== 'function') ts = ts.filter(t => t !== 'longpoll' && t !== 'sse');
    if (ts.length === 0) throw new SwitchboardError('bad_request', 'no usable transport in ' + JSON.stringify(o.transports));
    o.transports = ts;
    o.maxMessageSize = Math.max(1024, Number(o.maxMessageSize) || 65536);
    this._opts = o;
    this._urls = endpoints(url);
    this._token = o.token || null;
    // The lifecycle, the transport ladder and the reconnect backoff: decisions only, run here.
    this._m = new ConnectionMachine({
      transports: o.transports, minReconnectDelay: o.minReconnectDelay, maxReconnectDelay: o.maxReconnectDelay,
      upgradeInterval: o.upgradeInterval, renewableToken: !!o.getToken, random: env.random,
    });
    this._conn = null;
    this._sseLastEventId = null;    // id of the last SSE event seen: Last-Event-ID of the next SSE attempt
    this._reconnectTimer = null;
    this._watchdog = null;
    this._connectTimer = null;
    this._stableTimer = null;
    this._upgradeTimer = null;
    this._refreshTimer = null;
    this._upgradeProbe = null;
    this._pingMs = 0;
    this._pong = false;
    this._subs = new Map();          // channel -> Subscription
    this._requests = new RequestQueue(env, {maxBytes: o.maxMessageSize, timeoutMs: o.requestTimeout, firstId: CONNECT_ID + 1});
    this._connectResult = null;
    this._pollClient = randomId(8);  // stable `client` id for /poll
    this._listeners = [];
    this._listen(env.window, 'online', () => this._onOnline());
    this._listen(env.window, 'offline', () => this._onOffline());
    this._listen(env.window, 'pageshow', e => this._onPageShow(e));
    this._listen(env.window, 'pagehide', e => this._onPageHide(e));
    this._listen(env.document, 'visibilitychange', () => this._onVisibility());
  }

  /** Current state: 'disconnected' | 'connecting' | 'connected' | 'closed'. */
  get state() { return this._m.state; }

  /** Name of the active transport ('websocket' | 'sse' | 'longpoll'): the one connected, or being tried. */
  get transport() { return this._conn ? this._conn.name : this._m.transport; }

  /** The last connect result (`client`, `node`, `ping`, ...), or null before the first connect. */
  get connectResult() { return this._connectResult; }

  /** The endpoint URLs in use: `{base, ws, sse, poll, rpc}`. */
  get urls() { return {...this._urls}; }

  /** Start connecting (no-op when already connecting or connected). Reconnects by itself from then on. */
  connect() {
    const a = this._m.connect();
    if (a.error) throw new SwitchboardError('destroyed', 'client destroyed');
    this._run(a);
  }

  /**
   * Close the connection and stop reconnecting. Pending requests are
   * rejected with code 'closed'. Subscriptions are kept: connect() again
   * re-subscribes them from their positions. Safe from inside any listener.
   */
  close() { this._close('closed by client'); }

  /**
   * close(), end every subscription, remove the client's window/document
   * listeners and every listener added with on(). The client cannot connect again.
   */
  destroy() {
    const a = this._m.destroy();
    if (!a.destroy) return;
    this._closeWith(a);
    for (const sub of [...this._subs.values()]) this._unsubscribe(sub, 0, 'client destroyed', true);
    for (const [target, ev, fn] of this._listeners) {
      try { target.removeEventListener(ev, fn); } catch (e) { /* gone */ }
    }
    this._listeners = [];
    this.off();
  }

  /**
   * Follow a channel. Works in any state: the subscription is made (or
   * remade, from its last position) whenever a connection is up.
   * @param {string} channel
   * @param {SubscriptionOptions} [opts]  handlers, `since`, `getToken`
   * @returns {Subscription}
   */
  subscribe(channel, opts) {
    if (this._destroyed) throw new SwitchboardError('destroyed', 'client destroyed');
    if (!validChannel(channel)) throw new SwitchboardError('bad_request', 'invalid channel name: ' + JSON.stringify(channel));
    if (this._subs.has(channel)) throw new SwitchboardError(105, 'already subscribed to ' + channel);
    const sub = new Subscription(this, channel, opts || {});
    sub._backoff = new Backoff(this._opts.minReconnectDelay, this._opts.maxReconnectDelay, this._env.random, false);
    this._subs.set(channel, sub);
    this._kickSubscribe(sub);
    return sub;
  }

  /** The Subscription for a channel, or undefined. @param {string} channel */
  getSubscription(channel) { return this._subs.get(channel); }

  /**
   * Publish to a channel. An `idempotencyKey` is added when none is given,
   * so that a publish resent after a reconnect is not published twice.
   * A publish larger than `maxMessageSize` is refused with `'too_large'`.
   * @param {string} channel
   * @param {*} data
   * @param {{idempotencyKey?: string}} [opts]
   * @returns {Promise<{offset?: number, epoch?: string}>}
   */
  publish(channel, data, opts) {
    const params = {channel, data, idempotencyKey: (opts && opts.idempotencyKey) || 'js-' + this._pollClient + '-' + randomId(6)};
    return this._call('publish', params);
  }

  /** Who is in a channel. @param {string} channel @returns {Promise<{clients: Object}>} */
  presence(channel) { return this._call('presence', {channel}); }

  /** Counts of a channel's clients and users. @param {string} channel @returns {Promise<{clients: number, users: number}>} */
  presenceStats(channel) { return this._call('presenceStats', {channel}); }

  /**
   * A channel's history.
   * @param {string} channel
   * @param {{since?: {offset: number, epoch: string}, limit?: number, reverse?: boolean}} [opts]
   * @returns {Promise<{publications: Array, offset: number, epoch: string}>}
   */
  history(channel, opts) {
    const p = {channel};
    if (opts) for (const k of ['since', 'limit', 'reverse']) if (opts[k] !== undefined) p[k] = opts[k];
    return this._call('history', p);
  }

  /** An application-level round trip. @returns {Promise<{}>} */
  ping() { return this._call('ping', {}); }

  // -- internals: plumbing ----------------------------------------------------

  _log(...args) {
    const d = this._opts.debug;
    if (!d) return;
    if (typeof d === 'function') d(...args);
    else console.debug('[switchboard]', ...args);
  }

  _listen(target, ev, fn) {
    if (!target || typeof target.addEventListener !== 'function') return;
    target.addEventListener(ev, fn);
    this._listeners.push([target, ev, fn]);
  }

  _after(ms, fn) { return this._env.setTimeout(fn, ms); }

  _clear(t) { if (t !== null && t !== undefined) this._env.clearTimeout(t); }

  /** The machine's epoch: bumped by every transition; listeners' effects show here. */
  get _lc() { return this._m.epoch; }

  /** True once destroy() was called (subscriptions.js reads it). */
  get _destroyed() { return this._m.destroyed; }

  // Tell the listeners about the transition the machine just made (when its action says the public
  // state changed). Returns the epoch after them, or 0 when a listener moved the client on meanwhile
  // (then the caller stops: the listener's call won).
  _announce(a) {
    const lc = this._lc;
    if (!a.emitState) return lc;
    const state = this._m.state;
    this._log('state', state, this.transport);
    this._emit('state', {state, transport: this.transport});
    return this._lc === lc ? lc : 0;
  }

  // Run an action that starts (or cuts short the wait for) an attempt; the others are run where they are asked for.
  _run(a) {
    if (a.startAttempt) this._startAttempt(a);
  }

  _emitError(err) { this._emit('error', toError(err)); }

  _close(reason) { this._closeWith(this._m.close(reason)); }

  // Run a {close: reason} action (close() or destroy()).
  _closeWith(a) {
    if (!a.close) return;
    const reason = a.close;
    this._clear(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopConnTimers();
    this._stopUpgrade();
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
    const dropped = this._dropSubs(conn);
    this._rejectAll(new SwitchboardError('closed', 'client closed'));
    const lc = this._announce(a);
    if (!lc) return;
    if (a.disconnected) this._emit('disconnected', {code: 0, reason, reconnect: false, transport: conn ? conn.name : this.transport});
    if (this._lc !== lc) return;
    this._emitSubscribing(dropped, 0, reason);
  }

  _stopConnTimers() {
    this._clear(this._connectTimer);
    this._connectTimer = null;
    this._clear(this._stableTimer);
    this._stableTimer = null;
    this._clear(this._watchdog);
    this._watchdog = null;
    this._clear(this._refreshTimer);
    this._refreshTimer = null;
  }

  // -- internals: connecting ---------------------------------------------------

  _connectParams(name, conn) {
    const p = {version: VERSION};
    if (this._token) p.token = this._token;
    if (this._opts.name) p.name = this._opts.name;
    conn.connectSubs = new Map();  // channel -> {sub, gen}: what the connect request subscribes
    if (name === 'longpoll') {
      // Retries pending from an earlier connection do not hold a channel out of this one's polls.
      for (const sub of this._subs.values()) { this._clear(sub._retry); sub._retry = null; }
    } else {
      const subs = Object.create(null);  // a channel may be named `__proto__`
      for (const sub of this._subs.values()) {
        if (sub.state === 'unsubscribed') continue;
        sub.state = 'subscribing';
        sub._gen++;
        sub._buffer = [];
        this._clear(sub._retry);
        sub._retry = null;
        if (sub._getToken) continue;  // needs a token: subscribed with its own command
        sub._since = this._posFor(sub);
        subs[sub.channel] = sub._since ? {...sub._since} : {};
        conn.connectSubs.set(sub.channel, {sub, gen: sub._gen});
      }
      if (Object.keys(subs).length) p.subs = subs;
    }
    return p;
  }

  // Run a {startAttempt: transport} action: the machine is `connecting` already.
  _startAttempt(a) {
    this._clear(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopConnTimers();
    this._stopUpgrade();
    if (this._opts.getToken && !this._token) {
      this._fetchConnToken(a);
      return;
    }
    const name = a.startAttempt;
    const Conn = TRANSPORT_CLASSES[name];
    const conn = new Conn(this, {});
    conn.params = this._connectParams(name, conn);
    this._conn = conn;
    if (!this._announce(a) || this._conn !== conn) return;
    this._log('connecting over', name);
    this._connectTimer = this._after(this._opts.connectTimeout, () => {
      if (this._conn === conn && !conn.connected) {
        conn.close();
        this._connClosed(conn, 0, 'no connect reply within ' + this._opts.connectTimeout + ' ms');
      }
    });
    conn.open();
  }

  // getToken() before an attempt: the state is `connecting` meanwhile.
  _fetchConnToken(a) {
    const lc = this._announce(a);
    if (!lc) return;
    let p;
    try { p = Promise.resolve(this._opts.getToken()); } catch (e) { p = Promise.reject(e); }
    const timer = this._after(this._opts.connectTimeout, () => { this._connectTimer = null; fail(new Error('getToken timed out')); });
    this._connectTimer = timer;
    let settled = false;
    const fail = e => {
      if (settled) return;
      settled = true;
      if (this._lc !== lc) return;
      this._clear(timer);
      this._emitError(new SwitchboardError('transport', 'getToken failed: ' + (e && e.message || e), true));
      if (this._lc !== lc) return;
      this._afterLoss(this._m.connectionLost({transport: null, code: 0, reason: 'getToken failed', online: this._online()}), this.transport, []);
    };
    p.then(token => {
      if (settled) return;
      settled = true;
      if (this._lc !== lc) return;
      this._clear(timer);
      this._connectTimer = null;
      if (typeof token !== 'string' || token === '') {
        // No token for this user: the connection cannot be made (centrifuge's "unauthorized").
        this._conn = null;
        this._afterLoss(this._m.connectionLost({transport: null, code: 3500, reason: 'getToken gave no token', serverReconnect: false}), 'websocket', []);
        return;
      }
      this._token = token;
      this._run(this._m.tokenArrived());
    }, fail);
  }

  _connMessage(conn, obj) {
    // A message the client cannot handle (a node or proxy sending nonsense) ends the connection like
    // any transport failure, with a reconnect: an exception must not leave it half-handled.
    try {
      this._handleMessage(conn, obj);
    } catch (e) {
      this._failConn(conn, 'bad message from the node: ' + (e && e.message || e));
    }
  }

  _handleMessage(conn, obj) {
    if (conn !== this._conn || conn.done) return;
    conn.lastActivity = this._env.now();
    if (Object.keys(obj).length === 0) {  // server ping
      if (conn.name === 'websocket' && this._pong) conn.pong();
      return;
    }
    if (obj.id !== undefined && obj.id !== null) { this._onReply(conn, obj); return; }
    if (obj.disconnect) {
      const d = obj.disconnect;
      const code = typeof d.code === 'number' ? d.code : 3000;
      conn.close();
      this._connClosed(conn, code, d.reason || 'disconnect', d.reconnect);
      return;
    }
    if (typeof obj.channel !== 'string') return;
    const sub = this._subs.get(obj.channel);
    if (!sub || sub.state === 'unsubscribed') return;
    if (conn.name === 'longpoll') { this._pollItem(conn, sub, obj); return; }
    if (sub.state === 'subscribing' && (obj.pub || obj.join || obj.leave)) {
      sub._buffer.push(obj);  // before the subscribe reply: sort out once the position is known
      if (sub._buffer.length > MAX_HELD) this._failConn(conn, 'more than ' + MAX_HELD + ' pushes before the subscribe reply of ' + sub.channel);
      return;
    }
    this._channelPush(sub, obj);
  }

  // End a live connection from the client's side and reconnect (recovering).
  _failConn(conn, reason) {
    if (this._conn !== conn) return;
    this._log('closing the connection:', reason);
    conn.close();
    this._connClosed(conn, 0, reason);
  }

  _onReply(conn, msg) {
    if (msg.id === CONNECT_ID && !conn.connected) { this._onConnectReply(conn, msg); return; }
    this._requests.reply(msg);
  }

  _onConnectReply(conn, msg) {
    this._clear(this._connectTimer);
    this._connectTimer = null;
    if (msg.error) {
      const e = msg.error;
      conn.close();
      if (e.code === 109 && this._opts.getToken) this._token = null;
      const code = e.code === 109 ? 3503 : e.code === 101 ? 3500 : e.temporary ? 3000 : 3501;
      const lc = this._lc;
      this._emitError(e);
      if (this._lc !== lc) return;
      this._connClosed(conn, code, 'connect refused: ' + (e.message || e.code));
      return;
    }
    const res = msg.result || {};
    const env = this._env;
    conn.connected = true;
    conn.subsSettled = false;
    conn.lastActivity = env.now();
    // Seconds between the node's pings (0: none), taken as at most an hour, as the Swift client does:
    // a huge or infinite value would overflow the watchdog's timer and make it spin.
    this._pingMs = typeof res.ping === 'number' && Number.isFinite(res.ping) && res.ping > 0 ? Math.min(res.ping, 3600) * 1000 : 0;
    this._pong = !!res.pong;
    // The backoff starts over only once the connection has lived a while: one that dies at once
    // after every connect reply (say, each command POST gets 404) must not reconnect in a tight loop.
    this._stableTimer = this._after(STABLE_MS, () => { if (this._conn === conn) this._m.stable(); });
    const a = this._m.connected(conn.name);
    this._connectResult = {...res, transport: conn.name};
    if (this._pingMs > 0) {
      this._armWatchdog(conn, this._pingMs + 5000);
    } else if (conn.name !== 'longpoll' && Number.isFinite(this._opts.idlePing) && this._opts.idlePing > 0) {
      // No pings from the node: ask it, so a hung node or network is still found (a long-poll is
      // answered at its own timeout instead).
      const idle = Math.min(this._opts.idlePing, 3600000);
      this._armWatchdog(conn, idle + 5000, idle);
    }
    if (res.expires && typeof res.ttl === 'number' && this._opts.getToken) this._scheduleRefresh(conn, res.ttl);
    this._scheduleUpgrade(conn, a.probeAfter);
    // Listeners run from here on: after each, the connection must still be ours.
    const lc = this._announce(a);
    if (!lc || this._conn !== conn) return;
    this._emit('connected', this._connectResult);
    if (this._lc !== lc || this._conn !== conn) return;
    if (conn.name === 'longpoll') {
      conn.subsSettled = true;
      conn.restartPoll();
    } else {
      const results = res.subs || {};
      for (const [ch, {sub, gen}] of conn.connectSubs) {
        if (this._conn !== conn) return;
        const r = Object.prototype.hasOwnProperty.call(results, ch) ? results[ch] : undefined;
        const live = this._subs.get(ch) === sub && sub.state === 'subscribing' && sub._gen === gen;
        if (!live) {
          // Unsubscribed (or remade) while connecting: the connect request subscribed it anyway.
          if (!r || !r.error) this._call('unsubscribe', {channel: ch}, true).catch(() => {});
          continue;
        }
        if (r && r.error) this._onSubscribeError(sub, gen, toError(r.error), conn);
        else if (r) this._onSubscribeResult(sub, gen, sub._since, r);
        else this._sendSubscribe(sub, true);  // not answered in connect
      }
      if (this._conn !== conn) return;
      conn.subsSettled = true;
      for (const sub of [...this._subs.values()]) {
        if (this._conn !== conn) return;
        if (sub.state !== 'subscribing' || sub._sentOn === conn) continue;
        const c = conn.connectSubs.get(sub.channel);
        if (c && c.sub === sub && c.gen === sub._gen) continue;
        this._sendSubscribe(sub);  // subscribed while connecting, or needs a token
      }
    }
    // Requests made while disconnected, and those in flight when the last connection died: send now.
    if (this._conn !== conn) return;
    this._requests.sendUnsent(conn);
  }

  // `pingAfter`: the client pings (the node does not), once per silence of that many ms.
  _armWatchdog(conn, limit, pingAfter = 0) {
    let pingedAt = -Infinity;
    const check = () => {
      this._watchdog = null;
      if (this._conn !== conn) return;
      const now = this._env.now();
      const quiet = now - conn.lastActivity;
      if (quiet > limit) {
        this._log('nothing from the server for', limit, 'ms: reconnecting');
        this._failConn(conn, 'no ping from server');
        return;
      }
      // (<=: an answer within the same millisecond as the ping is activity after it.)
      if (pingAfter > 0 && quiet > pingAfter && pingedAt <= conn.lastActivity) {
        pingedAt = now;
        this._call('ping', {}, true).catch(() => {});
      }
      const next = pingAfter > 0 && quiet <= pingAfter ? pingAfter - quiet : limit - quiet;
      this._watchdog = this._after(Math.max(250, next + 10), check);
    };
    this._watchdog = this._after((pingAfter > 0 ? pingAfter : limit) + 10, check);
  }

  // Connection token refresh (protocol 1.1 `refresh`): ask getToken() before the token expires.
  _scheduleRefresh(conn, ttl) {
    this._clear(this._refreshTimer);
    const ms = refreshDelay(ttl);
    if (ms === null) return;
    this._refreshTimer = this._after(ms, async () => {
      this._refreshTimer = null;
      if (this._conn !== conn) return;
      try {
        const token = await this._opts.getToken();
        if (this._conn !== conn || typeof token !== 'string' || !token) return;
        this._token = token;
        const r = await this._call('refresh', {token}, true);
        if (this._conn === conn && r && r.expires && typeof r.ttl === 'number') this._scheduleRefresh(conn, r.ttl);
      } catch (e) {
        this._log('token refresh failed', e);  // the connection ends with 3503 and is remade with a new token
      }
    });
  }

  // -- internals: climbing back to the first transport --------------------------

  // Probe for WebSocket after `ms` (the machine's probeAfter / nextProbe; null: no probe).
  _scheduleUpgrade(conn, ms = this._m.nextProbe(conn.name)) {
    this._stopUpgrade();
    if (ms === null || ms === undefined) return;
    this._upgradeTimer = this._after(ms, () => {
      this._upgradeTimer = null;
      if (this._conn !== conn || this._m.state !== 'connected') return;
      this._probeWebSocket(conn);
    });
  }

  // Open a bare WebSocket: when it opens, the first transport works again; move to it.
  _probeWebSocket(conn) {
    let ws;
    try { ws = new this._env.WebSocket(this._urls.ws); } catch (e) { this._scheduleUpgrade(conn); return; }
    this._upgradeProbe = ws;
    const end = () => {
      ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
      try { ws.close(1000); } catch (e) { /* closed */ }
      this._clear(this._upgradeTimer);
      this._upgradeTimer = null;
    };
    // A probe that a proxy takes and never answers is cut at the connect timeout, and probing goes on.
    this._upgradeTimer = this._after(this._opts.connectTimeout, () => {
      this._upgradeTimer = null;
      if (this._upgradeProbe !== ws) return;
      end();
      this._upgradeProbe = null;
      if (this._conn === conn) this._scheduleUpgrade(conn);
    });
    ws.onopen = () => {
      end();
      this._upgradeProbe = null;
      if (this._conn !== conn) return;
      const a = this._m.climbBack();
      if (!a.startAttempt) return;
      this._log('WebSocket works again: moving back to it');
      conn.close();
      this._conn = null;
      this._stopConnTimers();
      const dropped = this._dropSubs();
      this._requests.detach(conn);
      const lc = this._lc;
      this._emitSubscribing(dropped, 0, 'moving back to websocket');
      if (this._lc === lc) this._startAttempt(a);  // unless a listener closed the client
    };
    ws.onerror = () => {};
    ws.onclose = () => {
      end();
      this._upgradeProbe = null;
      if (this._conn === conn) this._scheduleUpgrade(conn);
    };
  }

  _stopUpgrade() {
    this._clear(this._upgradeTimer);
    this._upgradeTimer = null;
    const ws = this._upgradeProbe;
    this._upgradeProbe = null;
    if (ws) { ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null; try { ws.close(1000); } catch (e) { /* closed */ } }
  }

  // -- internals: network and page lifecycle ----------------------------------

  _onOnline() {
    if (!this._m.active) return;
    this._log('online');
    this._run(this._m.online());
  }

  // Offline: end the connection without counting a transport failure, and wait for `online`.
  _onOffline() {
    if (!this._m.active) return;
    this._log('offline');
    this._suspend('browser offline');
  }

  _onPageHide(e) {
    if (e && e.persisted) this._suspend('page hidden (back/forward cache)');
  }

  _onPageShow(e) {
    if (e && e.persisted) this._onOnline();
  }

  // The page became visible again (a laptop lid opened): a connection that went quiet is remade now,
  // a pending backoff is cut short.
  _onVisibility() {
    const doc = this._env.document;
    if (!doc || doc.visibilityState !== 'visible') return;
    const a = this._m.visible();
    if (a.startAttempt) { this._startAttempt(a); return; }
    const conn = this._conn;
    if (a.checkQuiet && conn && this._pingMs > 0 && this._env.now() - conn.lastActivity > this._pingMs + 5000) {
      this._failConn(conn, 'quiet while the page was hidden');
    }
  }

  // Offline or pagehide: the machine moves to `suspended` (when it wants a connection); end it without a failure.
  _suspend(reason) {
    const a = this._m.suspend(reason);
    if (!a.suspend) return;
    this._clear(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopConnTimers();
    this._stopUpgrade();
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
    const dropped = this._dropSubs();
    this._requests.suspend(reason);
    const lc = this._announce(a);
    if (!lc) return;
    if (conn) this._emit('disconnected', {code: 0, reason, reconnect: true, transport: conn.name});
    if (this._lc !== lc) return;
    this._emitSubscribing(dropped, 0, reason);
  }

  _online() {
    const n = this._env.navigator;
    return !(n && n.onLine === false);
  }

  // -- internals: requests ------------------------------------------------------

  // A command through the request queue (which refuses one over maxMessageSize): sent now when connected,
  // else when the next connection is up. Connection-scoped commands need a connection and die with it.
  _call(method, params, connScoped = false) {
    if (this._m.destroyed) return Promise.reject(new SwitchboardError('destroyed', 'client destroyed'));
    if (this._m.state === 'closed' && !connScoped) return Promise.reject(new SwitchboardError('closed', 'client is closed; call connect()'));
    const conn = this._conn;
    if (connScoped && !(conn && conn.connected)) return Promise.reject(new SwitchboardError('closed', 'not connected'));
    return this._requests.add(method, params, connScoped, conn && conn.connected ? conn : null);
  }

  _rejectCommands(cmds, err) { this._requests.reject(cmds, err); }

  _rejectAll(err) { this._requests.rejectAll(err); }

  // -- internals: a connection ended ---------------------------------------------

  _connClosed(conn, code, reason, serverReconnect) {
    if (conn !== this._conn) return;
    this._conn = null;
    this._stopConnTimers();
    this._stopUpgrade();
    const wasConnected = conn.connected;
    code = typeof code === 'number' ? code : 0;
    // Connection-scoped commands (subscribe/unsubscribe) die with it; requests wait for the next connection.
    this._requests.connectionLost(conn);
    const dropped = this._dropSubs();
    // An expired token is no reason to stop when getToken() can give a new one.
    if (code === 3503 && this._opts.getToken) this._token = null;
    this._log('connection over', conn.name, code, reason, wasConnected ? '(was connected)' : '(never connected)');
    const a = this._m.connectionLost({transport: conn.name, opened: !!conn.opened, wasConnected, code, reason, serverReconnect,
      online: this._online()});
    this._afterLoss(a, conn.name, dropped);
  }

  // Run the machine's decision after an attempt or a connection ended: {terminal} (closed) or
  // {scheduleReconnect: ms} (disconnected, then connecting on this transport or the next).
  _afterLoss(a, transport, dropped) {
    if (a.terminal) {
      const {code, reason} = a.terminal;
      this._rejectAll(new SwitchboardError('closed', 'disconnected: ' + code + ' ' + reason));
      const lc = this._announce(a);
      if (!lc) return;
      this._emit('disconnected', {code, reason, reconnect: false, transport});
      if (this._lc !== lc) return;
      this._emitSubscribing(dropped, code, reason);
      return;
    }
    if (a.scheduleReconnect === undefined) return;
    const {scheduleReconnect: delay, code, reason} = a;
    if (a.fellBackTo) this._log('falling back to', a.fellBackTo);
    this._log('reconnecting in', Math.round(delay), 'ms', this._m.phase.name === 'suspended' ? '(offline: or at `online`)' : '');
    // The timer is set before any listener runs, so that close() from a listener cancels it.
    this._reconnectTimer = this._after(delay, () => { this._reconnectTimer = null; this._run(this._m.reconnectDue()); });
    const lc = this._announce(a);
    if (!lc) return;
    this._emit('disconnected', {code, reason, reconnect: true, transport});
    if (this._lc !== lc) return;
    this._emitSubscribing(dropped, code, reason);
  }
}

installSubscriptionMethods(Switchboard.prototype);
