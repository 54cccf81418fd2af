// The client: Switchboard, the connection state machine. It owns the
// connection attempts (one transport object each), the reconnect backoff,
// the transport fallback and the climb back to WebSocket, the page and
// network lifecycle, and puts the subscriptions and the request queue on
// whatever connection is up.

import {SwitchboardError, toError, isTerminal} from './errors.js';
import {makeEnv} from './env.js';
import {VERSION, ALL_TRANSPORTS, CONNECT_ID, STABLE_MS, MAX_HELD, randomId, validChannel, endpoints} from './util.js';
import {Backoff} from './backoff.js';
import {RequestQueue} from './queue.js';
import {Emitter} from './emitter.js';
import {Subscription} from './subscription.js';
import {TRANSPORT_CLASSES} from './transports/index.js';

// ===========================================================================
// The connection state machine
//
//   disconnected --connect()--> connecting --connect reply--> connected
//   connecting/connected --connection over--> disconnected (timer) --> connecting
//   connecting/connected --terminal code--> closed
//   any --close()--> closed --connect()--> connecting
//   any --destroy()--> closed for good
//
// Every transition that runs listeners checks afterwards that no listener
// changed the state (close(), destroy(), connect() from inside a listener
// win over what the transition would have done next).
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
      connectTimeout: 10000, requestTimeout: 20000, maxMessageSize: 65536, upgradeInterval: 60000, debug: false,
    }, Object.fromEntries(Object.entries(options || {}).filter(([, v]) => v !== undefined)));  // undefined: the default
    this._env = makeEnv(o.env);
    const env = this._env;
    let ts = (Array.isArray(o.transports) ? o.transports : String(o.transports).split(','))
      .map(t => String(t).trim().toLowerCase()).map(t => (t === 'ws' ? 'websocket' : t === 'poll' || t === 'long-polling' ? 'longpoll' : t))
      .filter((t, i, a) => ALL_TRANSPORTS.includes(t) && a.indexOf(t) === i);
    if (typeof env.WebSocket !== 'function') ts = ts.filter(t => t !== 'websocket');
    if (typeof env.EventSource !== 'function') ts = ts.filter(t => t !== 'sse');
    if (typeof env.fetch !== 'function') ts = ts.filter(t => t !== 'longpoll' && t !== 'sse');
    if (ts.length === 0) throw new SwitchboardError('bad_request', 'no usable transport in ' + JSON.stringify(o.transports));
    o.transports = ts;
    o.maxMessageSize = Math.max(1024, Number(o.maxMessageSize) || 65536);
    this._opts = o;
    this._urls = endpoints(url);
    this._token = o.token || null;
    this._tIndex = 0;                // transport in use / being tried
    this._failuresInRow = 0;         // attempts on this transport that never got a connect reply
    this._worked = new Set();        // transports that got a connect reply at least once
    this._state = 'disconnected';
    this._conn = null;
    this._lc = 0;                    // lifecycle counter: bumped by every transition; listeners' effects show here
    this._backoff = new Backoff(o.minReconnectDelay, o.maxReconnectDelay, env.random, true);
    this._reconnectTimer = null;
    this._watchdog = null;
    this._connectTimer = null;
    this._stableTimer = null;
    this._upgradeTimer = null;
    this._refreshTimer = null;
    this._upgradeProbe = null;
    this._active = false;            // connect() called and no close() since: reconnecting is wanted
    this._suspended = false;         // offline, or the page is in the back/forward cache
    this._destroyed = false;
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
  get state() { return this._state; }

  /** Name of the active transport ('websocket' | 'sse' | 'longpoll'): the one connected, or being tried. */
  get transport() { return this._conn ? this._conn.name : this._opts.transports[this._tIndex]; }

  /** The last connect result (`client`, `node`, `ping`, ...), or null before the first connect. */
  get connectResult() { return this._connectResult; }

  /** The endpoint URLs in use: `{base, ws, sse, poll, rpc}`. */
  get urls() { return {...this._urls}; }

  /** Start connecting (no-op when already connecting or connected). Reconnects by itself from then on. */
  connect() {
    if (this._destroyed) throw new SwitchboardError('destroyed', 'client destroyed');
    if (this._state === 'connecting' || this._state === 'connected') return;
    if (this._state === 'disconnected' && this._active) { this._reconnectNow(); return; }
    this._active = true;
    this._suspended = false;
    this._backoff.reset();
    this._failuresInRow = 0;
    this._startAttempt();
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
    if (this._destroyed) return;
    this._close('destroyed');
    this._destroyed = true;
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

  // Set the state and tell the listeners. Returns the lifecycle count after them, or 0 when a
  // listener moved the client on meanwhile (then the caller stops: the listener's call won).
  _setState(state) {
    if (this._state === state) return this._lc;
    const lc = ++this._lc;
    this._state = state;
    this._log('state', state, this.transport);
    this._emit('state', {state, transport: this.transport});
    return this._lc === lc ? lc : 0;
  }

  _emitError(err) { this._emit('error', toError(err)); }

  _close(reason) {
    if (this._destroyed) return;
    const was = this._state;
    this._lc++;
    this._clear(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopConnTimers();
    this._stopUpgrade();
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
    const dropped = this._dropSubs(conn);
    this._active = false;
    this._rejectAll(new SwitchboardError('closed', 'client closed'));
    const lc = this._setState('closed');
    if (!lc) return;
    if (was !== 'closed') this._emit('disconnected', {code: 0, reason, reconnect: false, transport: conn ? conn.name : this.transport});
    if (this._lc !== lc) return;
    this._emitSubscribing(dropped, 0, reason);
  }

  // Every live subscription back to `subscribing`; returns those that were subscribed.
  _dropSubs() {
    const dropped = [];
    for (const sub of this._subs.values()) {
      if (sub.state === 'unsubscribed') continue;
      if (sub.state === 'subscribed') dropped.push(sub);
      sub.state = 'subscribing';
      sub._gen++;
      sub._buffer = [];
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
    if (name !== 'longpoll') {
      const subs = {};
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

  _posFor(sub) {
    const p = sub._pos;
    return p && typeof p.offset === 'number' && typeof p.epoch === 'string' ? {offset: p.offset, epoch: p.epoch} : null;
  }

  _startAttempt() {
    this._clear(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopConnTimers();
    this._stopUpgrade();
    if (this._opts.getToken && !this._token) {
      this._fetchConnToken();
      return;
    }
    const name = this._opts.transports[this._tIndex];
    const Conn = TRANSPORT_CLASSES[name];
    const conn = new Conn(this, {});
    conn.params = this._connectParams(name, conn);
    this._conn = conn;
    this._lc++;
    if (!this._setState('connecting') || this._conn !== conn) return;
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
  _fetchConnToken() {
    this._lc++;
    const lc = this._setState('connecting');
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
      this._scheduleReconnect(null, 0, 'getToken failed', false);
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
        this._setTerminal('websocket', 3500, 'getToken gave no token');
        return;
      }
      this._token = token;
      this._startAttempt();
    }, fail);
  }

  _reconnectNow() {
    this._clear(this._reconnectTimer);
    this._reconnectTimer = null;
    this._startAttempt();
  }

  _connMessage(conn, obj) {
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

  _channelPush(sub, obj) {
    if (obj.pub) sub._deliver(obj.pub);
    else if (obj.join) sub._emit('join', {channel: sub.channel, ...obj.join});
    else if (obj.leave) sub._emit('leave', {channel: sub.channel, ...obj.leave});
    else if (obj.unsubscribe) {
      const u = obj.unsubscribe;
      if (u.code === 2500 || (u.code === 2501 && sub._getToken)) {
        // 2500 insufficient state: subscribe again from our position. 2501 token expired: with a new token.
        this._log('resubscribe after', u.code, sub.channel);
        if (u.code === 2501) sub._token = null;
        const was = sub.state;
        sub.state = 'subscribing';
        sub._gen++;
        if (was === 'subscribed') sub._emit('subscribing', {channel: sub.channel, code: u.code, reason: u.reason || ''});
        this._sendSubscribe(sub);
      } else {
        this._unsubscribe(sub, u.code, u.reason || 'unsubscribed by server', true);
      }
    }
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
    this._pingMs = (typeof res.ping === 'number' ? res.ping : 0) * 1000;
    this._pong = !!res.pong;
    // The backoff starts over only once the connection has lived a while: one that dies at once
    // after every connect reply (say, each command POST gets 404) must not reconnect in a tight loop.
    this._stableTimer = this._after(STABLE_MS, () => { if (this._conn === conn) this._backoff.reset(); });
    this._failuresInRow = 0;
    this._worked.add(conn.name);
    this._connectResult = {...res, transport: conn.name};
    if (this._pingMs > 0) this._armWatchdog(conn, this._pingMs + 5000);
    if (res.expires && typeof res.ttl === 'number' && this._opts.getToken) this._scheduleRefresh(conn, res.ttl);
    this._scheduleUpgrade(conn);
    // Listeners run from here on: after each, the connection must still be ours.
    const lc = this._setState('connected');
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
        const r = results[ch];
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

  _armWatchdog(conn, limit) {
    const check = () => {
      this._watchdog = null;
      if (this._conn !== conn) return;
      const quiet = this._env.now() - conn.lastActivity;
      if (quiet > limit) {
        this._log('nothing from the server for', limit, 'ms: reconnecting');
        this._failConn(conn, 'no ping from server');
        return;
      }
      this._watchdog = this._after(Math.max(250, limit - quiet + 10), check);
    };
    this._watchdog = this._after(limit + 10, check);
  }

  // Connection token refresh (protocol 1.1 `refresh`): ask getToken() before the token expires.
  _scheduleRefresh(conn, ttl) {
    this._clear(this._refreshTimer);
    const ms = Math.max(1000, ttl * 1000 * 0.8);
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

  _scheduleUpgrade(conn) {
    this._stopUpgrade();
    const ms = this._opts.upgradeInterval;
    if (!ms || this._tIndex === 0 || conn.name === this._opts.transports[0]) return;
    if (this._opts.transports[0] !== 'websocket') return;
    this._upgradeTimer = this._after(ms * (0.75 + this._env.random() / 2), () => {
      this._upgradeTimer = null;
      if (this._conn !== conn || this._suspended) return;
      this._probeWebSocket(conn);
    });
  }

  // Open a bare WebSocket: when it opens, the first transport works again; move to it.
  _probeWebSocket(conn) {
    let ws;
    try { ws = new this._env.WebSocket(this._urls.ws); } catch (e) { this._scheduleUpgrade(conn); return; }
    this._upgradeProbe = ws;
    const end = () => { ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null; try { ws.close(1000); } catch (e) { /* closed */ } };
    ws.onopen = () => {
      end();
      this._upgradeProbe = null;
      if (this._conn !== conn) return;
      this._log('WebSocket works again: moving back to it');
      this._lc++;
      conn.close();
      this._conn = null;
      this._stopConnTimers();
      const dropped = this._dropSubs();
      this._requests.detach(conn);
      this._tIndex = 0;
      this._failuresInRow = 0;
      const lc = this._lc;
      this._emitSubscribing(dropped, 0, 'moving back to websocket');
      if (this._lc === lc) this._startAttempt();  // unless a listener closed the client
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
    this._suspended = false;
    if (this._destroyed || !this._active) return;
    this._log('online');
    if (this._state === 'disconnected') this._reconnectNow();
  }

  // Offline: end the connection without counting a transport failure, and wait for `online`.
  _onOffline() {
    if (this._destroyed || !this._active) return;
    this._log('offline');
    this._suspend('browser offline');
  }

  _onPageHide(e) {
    if (e && e.persisted && this._active && !this._destroyed) this._suspend('page hidden (back/forward cache)');
  }

  _onPageShow(e) {
    if (e && e.persisted) this._onOnline();
  }

  // The page became visible again (a laptop lid opened): a connection that went quiet is remade now,
  // a pending backoff is cut short.
  _onVisibility() {
    const doc = this._env.document;
    if (!doc || doc.visibilityState !== 'visible' || this._destroyed || !this._active) return;
    if (this._state === 'disconnected' && !this._suspended) { this._reconnectNow(); return; }
    const conn = this._conn;
    if (this._state === 'connected' && conn && this._pingMs > 0 && this._env.now() - conn.lastActivity > this._pingMs + 5000) {
      this._failConn(conn, 'quiet while the page was hidden');
    }
  }

  _suspend(reason) {
    this._suspended = true;
    this._lc++;
    this._clear(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopConnTimers();
    this._stopUpgrade();
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
    const dropped = this._dropSubs();
    this._requests.suspend(reason);
    const lc = this._setState('disconnected');
    if (!lc) return;
    if (conn) this._emit('disconnected', {code: 0, reason, reconnect: true, transport: conn.name});
    if (this._lc !== lc) return;
    this._emitSubscribing(dropped, 0, reason);
  }

  _online() {
    const n = this._env.navigator;
    return !(n && n.onLine === false);
  }

  // -- internals: subscriptions ---------------------------------------------------

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
    const recovered = recovering && res.recovered === true;
    sub._backoff.reset();
    if (!recovered) sub._pos = typeof res.offset === 'number' ? {offset: res.offset, epoch: res.epoch} : null;
    // Order: `unrecovered` first, then the recovered publications, `subscribed`, then the held pushes.
    if (recovering && !recovered) {
      sub.unrecovered = true;
      sub._emit('unrecovered', {channel: sub.channel, offset: res.offset, epoch: res.epoch});
      if (sub.state === 'unsubscribed' || gen !== sub._gen) return;
    }
    if (recovered) {
      for (const pub of res.publications || []) {
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
    sub._refreshTimer = this._after(Math.max(1000, ttl * 800), async () => {
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

  // Long-polling: the `subs` of the next poll, and the subscriptions that have
  // no position yet (`probe`). Subscriptions with a position count as
  // (re)subscribed once polled from it (a `position` with recovered: false
  // says otherwise); new ones wait for their `position`.
  _pollSubs(conn) {
    const subs = {}, probe = [], now = [];
    for (const sub of this._subs.values()) {
      if (sub.state === 'unsubscribed') continue;
      const pos = this._posFor(sub);
      subs[sub.channel] = pos || {};
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

  _pollItem(conn, sub, item) {
    if (item.position) {
      const p = item.position;
      const had = this._posFor(sub);
      const gen = sub._gen;
      sub._pos = typeof p.offset === 'number' ? {offset: p.offset, epoch: p.epoch} : null;
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
      if (sub.state === 'subscribing') sub.state = 'subscribed';
      sub._deliver(item.pub);
    } else if (item.error) {
      const err = toError(item.error);
      sub._emit('error', err);
      this._unsubscribe(sub, err.code, err.message, true);
    } else if (item.unsubscribe) {
      const u = item.unsubscribe;
      if (u.code === 2500) {
        // Insufficient state (e.g. the channel's epoch changed under a held poll): as over WebSocket,
        // subscribe again from our position, which here is the next poll: its `position` says
        // `recovered: false` (then `unrecovered`), or its publications continue the stream.
        this._log('resubscribe after', u.code, sub.channel);
        const was = sub.state;
        sub.state = 'subscribing';
        sub._gen++;
        sub._lpConn = null;
        if (was === 'subscribed') sub._emit('subscribing', {channel: sub.channel, code: u.code, reason: u.reason || ''});
      } else {
        this._unsubscribe(sub, u.code, u.reason || 'unsubscribed by server', true);
      }
    }
  }

  // -- internals: requests ------------------------------------------------------

  // A command through the request queue (which refuses one over maxMessageSize): sent now when connected,
  // else when the next connection is up. Connection-scoped commands need a connection and die with it.
  _call(method, params, connScoped = false) {
    if (this._destroyed) return Promise.reject(new SwitchboardError('destroyed', 'client destroyed'));
    if (this._state === 'closed' && !connScoped) return Promise.reject(new SwitchboardError('closed', 'client is closed; call connect()'));
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
    // No reconnect for 3500-3999 (and 1002/1007), nor when a `disconnect` push says `reconnect: false`;
    // but 3503 with getToken() always reconnects: the node says `reconnect: false` because the same
    // token would be refused, and getToken() gives a new one.
    const renewable = code === 3503 && !!this._opts.getToken;
    const terminal = !renewable && (isTerminal(code) || serverReconnect === false);
    this._log('connection over', conn.name, code, reason, wasConnected ? '(was connected)' : '(never connected)');
    if (terminal) {
      this._setTerminal(conn.name, code, reason, dropped);
      return;
    }
    this._scheduleReconnect(conn, code, reason, wasConnected, dropped);
  }

  _setTerminal(transport, code, reason, dropped = []) {
    this._lc++;
    this._active = false;
    this._rejectAll(new SwitchboardError('closed', 'disconnected: ' + code + ' ' + reason));
    const lc = this._setState('closed');
    if (!lc) return;
    this._emit('disconnected', {code, reason, reconnect: false, transport});
    if (this._lc !== lc) return;
    this._emitSubscribing(dropped, code, reason);
  }

  _scheduleReconnect(conn, code, reason, wasConnected, dropped = []) {
    // Fall back to the next transport when this one cannot open (and never worked) or failed twice running.
    // Not while the browser is offline: every transport fails then, and none is to blame.
    let switched = false, wrapped = false;
    if (conn && !wasConnected && this._online()) {
      this._failuresInRow++;
      const n = this._opts.transports.length;
      if (n > 1 && ((!conn.opened && !this._worked.has(conn.name)) || this._failuresInRow >= 2)) {
        this._tIndex = (this._tIndex + 1) % n;
        this._failuresInRow = 0;
        switched = true;
        wrapped = this._tIndex === 0;
        this._log('falling back to', this._opts.transports[this._tIndex]);
      }
    } else {
      this._failuresInRow = 0;
    }
    let delay;
    if (switched && !wrapped) {
      delay = 0;  // try the next transport at once
    } else {
      const floor = code === 3001 || code === 3002 ? 4 * this._opts.minReconnectDelay : 0;
      delay = this._backoff.next(floor);
    }
    // Offline: at `online`, or after the longest backoff should that event never come.
    const offline = !this._online();
    if (offline) { this._suspended = true; delay = this._opts.maxReconnectDelay; }
    this._log('reconnecting in', Math.round(delay), 'ms', offline ? '(offline: or at `online`)' : '');
    // The timer is set before any listener runs, so that close() from a listener cancels it.
    this._lc++;
    this._reconnectTimer = this._after(delay, () => { this._reconnectTimer = null; this._startAttempt(); });
    const lc = this._setState('disconnected');
    if (!lc) return;
    this._emit('disconnected', {code, reason, reconnect: true, transport: conn ? conn.name : this.transport});
    if (this._lc !== lc) return;
    this._emitSubscribing(dropped, code, reason);
  }
}
