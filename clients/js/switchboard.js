// Switchboard browser client: protocol v1 over WebSocket, SSE and long-polling.
//
// An ES module with no dependencies and no build step:
//
//   import {Switchboard} from '/switchboard.js';
//   const sb = new Switchboard();                      // the page's own node
//   const sub = sb.subscribe('chat:lobby', {onPublication: pub => console.log(pub.offset, pub.data)});
//   sb.connect();
//   await sb.publish('chat:lobby', {text: 'hi'});
//
// See README.md next to this file for the rules it follows (fallback,
// reconnect, recovery) and docs/transports.md for the HTTP contract.

/** Version string sent in `connect`. */
export const VERSION = 'switchboard.js/1.0';

const ALL_TRANSPORTS = ['websocket', 'sse', 'longpoll'];
const CONNECT_ID = 1;            // the connect command's id on every transport (SSE implies it)
const CHANNEL_MAX_BYTES = 255;
const STABLE_MS = 5000;          // a connection that lived this long resets the reconnect backoff

/**
 * An error from the server (a reply's `error`) or from the client itself.
 * Server errors carry the protocol's numeric `code` (101 unauthorized, 103
 * permission denied, ...). Client-side failures use string codes:
 * `'timeout'` (no reply within `requestTimeout`), `'closed'` (close() was
 * called, or the server ended the connection for good), `'bad_request'`
 * (refused by the client before sending), `'transport'` (an HTTP answer the
 * protocol has no reply for, e.g. 413).
 */
export class SwitchboardError extends Error {
  /**
   * @param {number|string} code
   * @param {string} message
   * @param {boolean} [temporary]
   */
  constructor(code, message, temporary = false) {
    super(message || String(code));
    this.name = 'SwitchboardError';
    /** @type {number|string} */
    this.code = code;
    /** @type {boolean} */
    this.temporary = !!temporary;
  }
}

function toError(e) {
  if (e instanceof SwitchboardError) return e;
  if (e && typeof e === 'object' && 'code' in e) return new SwitchboardError(e.code, e.message, e.temporary);
  return new SwitchboardError('transport', String(e && e.message || e));
}

/** Codes after which the client does not reconnect on its own (protocol: 3500-3999, and the RFC 6455 client bugs). */
function isTerminal(code) {
  return (code >= 3500 && code <= 3999) || code === 1009 || code === 1007 || code === 1002;
}

function randomId(bytes = 8) {
  const a = new Uint8Array(bytes);
  if (globalThis.crypto && crypto.getRandomValues) crypto.getRandomValues(a);
  else for (let i = 0; i < bytes; i++) a[i] = Math.floor(Math.random() * 256);
  return Array.from(a, b => b.toString(16).padStart(2, '0')).join('');
}

function parseLines(text, out) {
  for (const part of String(text).split('\n')) {
    const p = part.trim();
    if (!p) continue;
    let obj;
    try { obj = JSON.parse(p); } catch (e) { out.bad = (out.bad || 0) + 1; continue; }
    if (obj && typeof obj === 'object' && !Array.isArray(obj)) out.push(obj);
  }
  return out;
}

function validChannel(ch) {
  if (typeof ch !== 'string' || ch.length === 0) return false;
  if (new TextEncoder().encode(ch).length > CHANNEL_MAX_BYTES) return false;
  return !/[\u0000-\u001f\u007f]/.test(ch);
}

/** Derive the endpoint URLs from a base (http(s)://host[:port][/prefix], or ws(s)://.../ws). */
function endpoints(url) {
  const here = typeof location !== 'undefined' ? location : null;
  const u = new URL(url || (here ? here.origin : 'http://127.0.0.1:8000'), here ? here.href : undefined);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  const path = u.pathname.replace(/\/(ws|sse|poll|rpc)\/?$/, '').replace(/\/+$/, '');
  const base = u.origin + path;
  return {
    base,
    ws: base.replace(/^http/, 'ws') + '/ws',
    sse: base + '/sse',
    poll: base + '/poll',
    rpc: base + '/rpc',
  };
}

// ---------------------------------------------------------------------------
// Tiny event emitter
// ---------------------------------------------------------------------------

class Emitter {
  constructor() { this._handlers = new Map(); }

  /**
   * Add a listener; returns a function that removes it.
   * @param {string} event
   * @param {Function} fn
   * @returns {() => void}
   */
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, []);
    this._handlers.get(event).push(fn);
    return () => this.off(event, fn);
  }

  /** Remove a listener added with on(). */
  off(event, fn) {
    const list = this._handlers.get(event);
    if (!list) return;
    const i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
  }

  _emit(event, arg) {
    const list = this._handlers.get(event);
    if (!list) return;
    for (const fn of list.slice()) {
      try { fn(arg); } catch (e) { setTimeout(() => { throw e; }); }  // a listener's bug must not break the client
    }
  }
}

// ---------------------------------------------------------------------------
// Subscription
// ---------------------------------------------------------------------------

/**
 * @typedef {Object} Publication
 * @property {string} channel
 * @property {number} [offset]  present when the channel keeps history
 * @property {string} [epoch]
 * @property {*} data
 * @property {{client: string, user: string}} [info]  present when a client (not the HTTP API) published
 */

/**
 * @typedef {Object} SubscribedContext
 * @property {string} channel
 * @property {boolean} recovering  true when a position was sent (a re-subscribe)
 * @property {boolean} recovered   true when every missed publication was delivered
 * @property {number} [offset]
 * @property {string} [epoch]
 * @property {string} transport
 */

/**
 * @typedef {Object} SubscriptionHandlers
 * @property {(pub: Publication) => void} [onPublication]  each publication once, in offset order
 * @property {(info: {channel: string, client: string, user: string}) => void} [onJoin]
 * @property {(info: {channel: string, client: string, user: string}) => void} [onLeave]
 * @property {(ctx: SubscribedContext) => void} [onSubscribed]  after every (re)subscribe
 * @property {(ctx: {channel: string, code: number, reason: string}) => void} [onUnsubscribed]  the subscription is over
 * @property {(err: SwitchboardError) => void} [onError]
 * @property {(ctx: {channel: string, offset?: number, epoch?: string}) => void} [onUnrecovered]
 *   publications were missed for good (recovered: false); the subscription continues from the new position
 */

/**
 * One channel subscription, made by {@link Switchboard#subscribe}. It lives
 * across reconnects: the client re-subscribes it from its last position.
 * Events (also via `on(event, fn)`): `publication`, `join`, `leave`,
 * `subscribed`, `unsubscribed`, `error`, `unrecovered`.
 */
export class Subscription extends Emitter {
  /** @param {Switchboard} client @param {string} channel @param {SubscriptionHandlers} handlers */
  constructor(client, channel, handlers) {
    super();
    this._client = client;
    /** The channel name. @type {string} */
    this.channel = channel;
    /** 'subscribing' | 'subscribed' | 'unsubscribed' @type {string} */
    this.state = 'subscribing';
    /** Set when publications were missed for good at some (re)subscribe; stays true. */
    this.unrecovered = false;
    this._pos = null;        // {offset, epoch} of the last publication delivered (or the subscribe position)
    this._since = null;      // position sent with the (re)subscribe in flight
    this._buffer = [];       // pushes that came before the subscribe reply
    this._gen = 0;           // which subscribe request is current
    const map = {onPublication: 'publication', onJoin: 'join', onLeave: 'leave', onSubscribed: 'subscribed',
      onUnsubscribed: 'unsubscribed', onError: 'error', onUnrecovered: 'unrecovered'};
    for (const [k, ev] of Object.entries(map)) {
      if (handlers && typeof handlers[k] === 'function') this.on(ev, handlers[k]);
    }
  }

  /** Position of the last publication delivered: `{offset, epoch}` or null. */
  get position() { return this._pos ? {...this._pos} : null; }

  /** Stop following the channel (tells the server, on WebSocket and SSE). */
  unsubscribe() { this._client._unsubscribe(this, 0, 'unsubscribe called'); }

  // Deliver one publication unless it was delivered before (offset <= last). Returns true when delivered.
  _deliver(pub, epoch) {
    if (typeof pub.offset === 'number') {
      if (this._pos && typeof this._pos.offset === 'number' && pub.offset <= this._pos.offset) {
        this._client._log('drop duplicate', this.channel, pub.offset, '<=', this._pos.offset);
        return false;
      }
      if (this._pos && typeof this._pos.offset === 'number' && pub.offset !== this._pos.offset + 1) {
        this._client._log('gap in', this.channel, 'after', this._pos.offset, 'got', pub.offset);
      }
      this._pos = {offset: pub.offset, epoch: epoch !== undefined ? epoch : (this._pos ? this._pos.epoch : undefined)};
    }
    this._emit('publication', {channel: this.channel, offset: pub.offset, epoch: this._pos ? this._pos.epoch : undefined,
      data: pub.data, info: pub.info});
    return true;
  }
}

// ---------------------------------------------------------------------------
// Transports. Each one is one connection attempt; the client makes a new one
// for every attempt. They report to the client through:
//   client._connMessage(conn, obj)   every JSON object received
//   client._connClosed(conn, code, reason)   once, when the connection is over
// and offer send(commands), close() (silent), and `opened` (the transport
// itself opened: WS open event, first SSE event, long-poll handshake answer).
// ---------------------------------------------------------------------------

class WebSocketConn {
  constructor(client, params) {
    this.name = 'websocket';
    this.client = client;
    this.params = params;
    this.opened = false;
    this.connected = false;
    this.done = false;
    this.ws = null;
  }

  open() {
    let ws;
    try {
      ws = new WebSocket(this.client._urls.ws);
    } catch (e) {
      setTimeout(() => this._end(0, 'cannot create WebSocket: ' + e), 0);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.opened = true;
      this._sendText(JSON.stringify({id: CONNECT_ID, connect: this.params}));
    };
    ws.onmessage = e => {
      if (typeof e.data !== 'string') return;
      for (const obj of parseLines(e.data, [])) {
        if (this.done) return;
        this.client._connMessage(this, obj);
      }
    };
    ws.onerror = () => {};  // a close event follows
    ws.onclose = e => this._end(e.code, e.reason || (this.opened ? 'connection closed' : 'cannot open'));
  }

  _sendText(text) {
    if (this.ws && this.ws.readyState === 1) {
      try { this.ws.send(text); } catch (e) { this.client._log('ws send failed', e); }
    }
  }

  send(cmds) { if (cmds.length) this._sendText(cmds.map(c => JSON.stringify(c)).join('\n')); }

  pong() { this._sendText('{}'); }

  _end(code, reason) {
    if (this.done) return;
    this.done = true;
    this.client._connClosed(this, code, reason);
  }

  close() {
    this.done = true;
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(1000); } catch (e) { /* already closed */ }
  }
}

// Serialises command POSTs (one in flight, everything queued meanwhile goes in
// the next body) so that commands reach the server in the order they were sent.
class PostQueue {
  constructor(post) { this.post = post; this.queue = []; this.busy = false; this.stopped = false; }

  push(cmds) { this.queue.push(...cmds); this.kick(); }

  kick() {
    if (this.busy || this.stopped || this.queue.length === 0) return;
    const batch = this.queue.splice(0);
    this.busy = true;
    Promise.resolve(this.post(batch)).catch(() => {}).then(() => {
      this.busy = false;
      this.kick();
    });
  }

  stop() { this.stopped = true; this.queue = []; }
}

async function fetchWithTimeout(url, init, ms, extraSignal) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), ms);
  const onAbort = () => ctrl.abort();
  if (extraSignal) extraSignal.addEventListener('abort', onAbort);
  try {
    return await fetch(url, {...init, signal: ctrl.signal, cache: 'no-store', credentials: 'same-origin'});
  } finally {
    clearTimeout(timer);
    if (extraSignal) extraSignal.removeEventListener('abort', onAbort);
  }
}

async function readError(resp, fallbackCode) {
  try {
    const doc = await resp.json();
    if (doc && doc.error) return toError(doc.error);
  } catch (e) { /* not JSON */ }
  return new SwitchboardError(fallbackCode, 'HTTP ' + resp.status);
}

class SseConn {
  constructor(client, params) {
    this.name = 'sse';
    this.client = client;
    this.params = params;
    this.opened = false;
    this.connected = false;
    this.done = false;
    this.session = null;
    this.es = null;
    this.posts = new PostQueue(batch => this._post(batch));
  }

  open() {
    const url = this.client._urls.sse + '?connect=' + encodeURIComponent(JSON.stringify(this.params));
    let es;
    try {
      es = new EventSource(url);
    } catch (e) {
      setTimeout(() => this._end(0, 'cannot create EventSource: ' + e), 0);
      return;
    }
    this.es = es;
    es.onmessage = e => {
      this.opened = true;
      for (const obj of parseLines(e.data, [])) {
        if (this.done) return;
        if (obj.id === CONNECT_ID && obj.result && obj.result.session) this.session = obj.result.session;
        this.client._connMessage(this, obj);
      }
    };
    // EventSource would reconnect by itself with the same (stale) URL: close it and let the client decide.
    es.onerror = () => this._end(0, this.opened ? 'stream ended' : 'cannot open');
  }

  send(cmds) { if (cmds.length) this.posts.push(cmds); }

  async _post(batch) {
    if (this.done) return;
    const url = this.client._urls.sse + '?session=' + encodeURIComponent(this.session || '');
    let resp;
    try {
      resp = await fetchWithTimeout(url, {
        method: 'POST', headers: {'Content-Type': 'text/plain'},
        body: batch.map(c => JSON.stringify(c)).join('\n'),
      }, this.client._opts.requestTimeout);
    } catch (e) {
      if (!this.done) this._end(0, 'command POST failed: ' + e);  // the commands are resent on the next connection
      return;
    }
    if (this.done) return;
    if (resp.status === 202 || resp.status === 200) return;  // the replies come on the stream
    if (resp.status === 404 || resp.status >= 500) {
      // 404: the session is gone (its node died or ended it); 503: its node did not answer.
      this._end(0, 'command POST answered ' + resp.status);
      return;
    }
    const err = await readError(resp, resp.status === 400 ? 107 : 'transport');
    this.client._rejectCommands(batch, err);
  }

  _end(code, reason) {
    if (this.done) return;
    this.done = true;
    this._closeStream();
    this.client._connClosed(this, code, reason);
  }

  _closeStream() {
    this.posts.stop();
    const es = this.es;
    if (es) {
      es.onmessage = es.onerror = null;
      try { es.close(); } catch (e) { /* closed */ }
    }
  }

  close() { this.done = true; this._closeStream(); }
}

class LongPollConn {
  constructor(client, params) {
    this.name = 'longpoll';
    this.client = client;
    this.params = params;
    this.opened = false;
    this.connected = false;
    this.done = false;
    this.pollCtrl = null;
    this.polling = false;
    this.restart = false;
    this.restartTimer = null;
    this.posts = new PostQueue(batch => this._rpc(batch, false));
  }

  _headers() {
    const h = {'Content-Type': 'text/plain'};
    if (this.params.token) h.Authorization = 'Bearer ' + this.params.token;
    return h;
  }

  // The handshake: an rpc `ping` checks the endpoint and the token; its answer stands for the connect reply.
  open() { this._rpc([{id: CONNECT_ID, ping: {}}], true); }

  send(cmds) { if (cmds.length) this.posts.push(cmds); }

  async _rpc(batch, handshake) {
    if (this.done) return;
    let resp;
    try {
      resp = await fetchWithTimeout(this.client._urls.rpc, {
        method: 'POST', headers: this._headers(), body: batch.map(c => JSON.stringify(c)).join('\n'),
      }, this.client._opts.requestTimeout);
    } catch (e) {
      if (!this.done) this._end(0, (handshake ? 'cannot open: ' : 'rpc failed: ') + e);
      return;
    }
    if (this.done) return;
    if (resp.status === 401) {
      const err = await readError(resp, 101);
      this._end(err.code === 109 ? 3503 : 3500, err.message);
      return;
    }
    if (resp.status === 503) { this._end(3001, 'node draining'); return; }
    if (resp.status !== 200) {
      if (handshake || resp.status >= 500 || resp.status === 404 || resp.status === 403) {
        this._end(0, 'rpc answered HTTP ' + resp.status);
        return;
      }
      const err = await readError(resp, resp.status === 400 ? 107 : 'transport');
      this.client._rejectCommands(batch, err);
      return;
    }
    let replies;
    try { replies = await resp.json(); } catch (e) { replies = null; }
    if (this.done) return;
    if (!Array.isArray(replies)) { this._end(0, 'rpc answer is not a JSON array'); return; }
    if (handshake) {
      this.opened = true;
      const r = replies[0] || {};
      if (r.error) { this.client._connMessage(this, {id: CONNECT_ID, error: r.error}); return; }
      this.client._connMessage(this, {id: CONNECT_ID, result: {
        client: this.client._pollClient, transport: 'longpoll', ping: 0, pong: false, version: r.result && r.result.version,
      }});
      return;
    }
    for (const r of replies) {
      if (this.done) return;
      if (r && typeof r === 'object') this.client._connMessage(this, r);
    }
  }

  // Abort the poll in flight (if any) and poll again with the current channels.
  restartPoll() {
    if (this.done || !this.connected) return;
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {  // a burst of subscribe() calls makes one new poll
      if (this.done) return;
      if (this.polling && this.pollCtrl) { this.restart = true; this.pollCtrl.abort(); }
      else this._loop();
    }, 5);
  }

  async _loop() {
    if (this.polling || this.done) return;
    this.polling = true;
    let tooMany = 0;
    const opts = this.client._opts;
    try {
      for (;;) {
        if (this.done) return;
        const {subs, probe} = this.client._pollSubs(this);
        if (Object.keys(subs).length === 0) return;  // nothing to follow: idle until subscribe()
        // A channel never positioned yet: poll with timeout 0, which answers at once with its position
        // (or nothing, when it keeps no history); then poll as usual.
        const timeout = probe.length ? 0 : Math.max(0, Math.min(60, Math.round(opts.pollTimeout / 1000)));
        const body = {subs, timeout, client: this.client._pollClient};
        this.restart = false;
        this.pollCtrl = new AbortController();
        const started = Date.now();
        let resp;
        try {
          resp = await fetchWithTimeout(this.client._urls.poll, {
            method: 'POST', headers: this._headers(), body: JSON.stringify(body),
          }, timeout * 1000 + 10000, this.pollCtrl.signal);
        } catch (e) {
          if (this.done) return;
          if (this.restart) continue;  // aborted for a new set of channels
          this._end(0, 'poll failed: ' + e);
          return;
        }
        if (this.done) return;
        if (resp.status === 429) {  // an aborted poll may still count on the node for a moment
          if (++tooMany > 10) { this._end(0, 'poll refused with 429 ten times'); return; }
          await new Promise(r => setTimeout(r, 200 + Math.random() * 400 * tooMany));
          continue;
        }
        tooMany = 0;
        if (resp.status === 401) {
          const err = await readError(resp, 101);
          this._end(err.code === 109 ? 3503 : 3500, err.message);
          return;
        }
        if (resp.status === 503) { this._end(3001, 'node draining'); return; }
        if (resp.status === 400) {
          const err = await readError(resp, 107);
          this.client._emitError(err);
          this._end(3501, 'poll refused: ' + err.message);
          return;
        }
        if (resp.status !== 200) { this._end(0, 'poll answered HTTP ' + resp.status); return; }
        let items;
        try { items = await resp.json(); } catch (e) {
          if (this.done) return;
          if (this.restart) continue;
          this._end(0, 'poll answer unreadable: ' + e);
          return;
        }
        if (this.done) return;
        if (!Array.isArray(items)) { this._end(0, 'poll answer is not a JSON array'); return; }
        for (const item of items) {
          if (this.done) return;
          if (item && typeof item === 'object') this.client._connMessage(this, item);
        }
        if (this.done) return;
        if (probe.length) { this.client._pollProbed(probe); continue; }
        if (items.length === 0 && Date.now() - started < 200 && !this.restart) {
          await new Promise(r => setTimeout(r, 500));  // never spin on a node that answers [] at once
        }
      }
    } finally {
      this.polling = false;
      this.pollCtrl = null;
    }
  }

  _end(code, reason) {
    if (this.done) return;
    this.close();
    this.client._connClosed(this, code, reason);
  }

  close() {
    this.done = true;
    clearTimeout(this.restartTimer);
    this.posts.stop();
    if (this.pollCtrl) { try { this.pollCtrl.abort(); } catch (e) { /* done */ } }
  }
}

const TRANSPORT_CLASSES = {websocket: WebSocketConn, sse: SseConn, longpoll: LongPollConn};

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/**
 * @typedef {Object} SwitchboardOptions
 * @property {string[]} [transports]  order of preference, default ['websocket', 'sse', 'longpoll']
 * @property {string} [token]         connection JWT
 * @property {string} [name]          client name sent in `connect`
 * @property {number} [minReconnectDelay]  ms, default 500
 * @property {number} [maxReconnectDelay]  ms, default 20000
 * @property {number} [pollTimeout]   ms the server may hold a long-poll, default 25000 (sent in whole seconds, 0-60)
 * @property {number} [connectTimeout]  ms to wait for the connect reply, default 10000
 * @property {number} [requestTimeout]  ms a publish/history/presence call may take, reconnects included, default 20000
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
      transports: ALL_TRANSPORTS.slice(), token: undefined, name: undefined,
      minReconnectDelay: 500, maxReconnectDelay: 20000, pollTimeout: 25000,
      connectTimeout: 10000, requestTimeout: 20000, debug: false,
    }, options || {});
    let ts = (Array.isArray(o.transports) ? o.transports : String(o.transports).split(','))
      .map(t => String(t).trim().toLowerCase()).map(t => (t === 'ws' ? 'websocket' : t === 'poll' || t === 'long-polling' ? 'longpoll' : t))
      .filter((t, i, a) => ALL_TRANSPORTS.includes(t) && a.indexOf(t) === i);
    if (typeof WebSocket === 'undefined') ts = ts.filter(t => t !== 'websocket');
    if (typeof EventSource === 'undefined') ts = ts.filter(t => t !== 'sse');
    if (ts.length === 0) throw new SwitchboardError('bad_request', 'no usable transport in ' + JSON.stringify(o.transports));
    o.transports = ts;
    this._opts = o;
    this._urls = endpoints(url);
    this._tIndex = 0;                // transport in use / being tried
    this._failuresInRow = 0;         // attempts on this transport that never got a connect reply
    this._worked = new Set();        // transports that got a connect reply at least once
    this._state = 'disconnected';
    this._conn = null;
    this._attempt = 0;               // backoff exponent
    this._reconnectTimer = null;
    this._watchdog = null;
    this._connectTimer = null;
    this._stableTimer = null;
    this._pingMs = 0;
    this._pong = false;
    this._subs = new Map();          // channel -> Subscription
    this._pending = new Map();       // id -> {cmd, resolve, reject, timer, connScoped, sentOn}
    this._nextId = CONNECT_ID + 1;
    this._connectResult = null;
    this._pollClient = randomId(8);  // stable `client` id for /poll
    this._onOnline = () => { if (this._state === 'disconnected' && this._reconnectTimer) this._reconnectNow(); };
    if (typeof addEventListener === 'function') addEventListener('online', this._onOnline);
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
    if (this._state === 'connecting' || this._state === 'connected') return;
    if (this._state === 'disconnected' && this._reconnectTimer) { this._reconnectNow(); return; }
    this._attempt = 0;
    this._failuresInRow = 0;
    this._startAttempt();
  }

  /**
   * Close the connection and stop reconnecting. Pending requests are
   * rejected with code 'closed'. Subscriptions are kept: connect() again
   * re-subscribes them from their positions.
   */
  close() {
    const was = this._state;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopConnTimers();
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
    for (const sub of this._subs.values()) if (sub.state === 'subscribed') sub.state = 'subscribing';
    this._rejectAll(new SwitchboardError('closed', 'client closed'));
    this._setState('closed');
    if (was !== 'closed') this._emit('disconnected', {code: 0, reason: 'closed by client', reconnect: false, transport: conn ? conn.name : this.transport});
  }

  /**
   * Follow a channel. Works in any state: the subscription is made (or
   * remade, from its last position) whenever a connection is up.
   * @param {string} channel
   * @param {SubscriptionHandlers} [handlers]
   * @returns {Subscription}
   */
  subscribe(channel, handlers) {
    if (!validChannel(channel)) throw new SwitchboardError('bad_request', 'invalid channel name: ' + JSON.stringify(channel));
    if (this._subs.has(channel)) throw new SwitchboardError(105, 'already subscribed to ' + channel);
    const sub = new Subscription(this, channel, handlers || {});
    this._subs.set(channel, sub);
    const conn = this._conn;
    if (conn && conn.connected) {
      if (conn.name === 'longpoll') conn.restartPoll();
      else this._sendSubscribe(sub);
    }
    return sub;
  }

  /** The Subscription for a channel, or undefined. @param {string} channel */
  getSubscription(channel) { return this._subs.get(channel); }

  /**
   * Publish to a channel. An `idempotencyKey` is added when none is given,
   * so that a publish resent after a reconnect is not published twice.
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

  // -- internals -------------------------------------------------------------

  _log(...args) {
    const d = this._opts.debug;
    if (!d) return;
    if (typeof d === 'function') d(...args);
    else console.debug('[switchboard]', ...args);
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this._log('state', state, this.transport);
    this._emit('state', {state, transport: this.transport});
  }

  _emitError(err) { this._emit('error', toError(err)); }

  _connectParams(name) {
    const p = {version: VERSION};
    if (this._opts.token) p.token = this._opts.token;
    if (this._opts.name) p.name = this._opts.name;
    if (name !== 'longpoll') {
      const subs = {};
      for (const sub of this._subs.values()) {
        if (sub.state === 'unsubscribed') continue;
        sub.state = 'subscribing';
        sub._gen++;
        sub._buffer = [];
        sub._since = this._posFor(sub);
        subs[sub.channel] = sub._since ? {...sub._since} : {};
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
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    const name = this._opts.transports[this._tIndex];
    const Conn = TRANSPORT_CLASSES[name];
    const conn = new Conn(this, this._connectParams(name));
    this._conn = conn;
    this._setState('connecting');
    this._log('connecting over', name);
    this._stopConnTimers();
    this._connectTimer = setTimeout(() => {
      if (this._conn === conn && !conn.connected) {
        conn.close();
        this._connClosed(conn, 0, 'no connect reply within ' + this._opts.connectTimeout + ' ms');
      }
    }, this._opts.connectTimeout);
    conn.open();
  }

  _reconnectNow() {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._startAttempt();
  }

  _stopConnTimers() {
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    clearTimeout(this._stableTimer);
    this._stableTimer = null;
    clearInterval(this._watchdog);
    this._watchdog = null;
  }

  _connMessage(conn, obj) {
    if (conn !== this._conn || conn.done) return;
    conn.lastActivity = Date.now();
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
      return;
    }
    this._channelPush(sub, obj);
  }

  _channelPush(sub, obj) {
    if (obj.pub) sub._deliver(obj.pub);
    else if (obj.join) sub._emit('join', {channel: sub.channel, ...obj.join});
    else if (obj.leave) sub._emit('leave', {channel: sub.channel, ...obj.leave});
    else if (obj.unsubscribe) {
      const u = obj.unsubscribe;
      if (u.code === 2500) {  // insufficient state: subscribe again from our position
        this._log('resubscribe after 2500', sub.channel);
        this._sendSubscribe(sub);
      } else {
        this._unsubscribe(sub, u.code, u.reason || 'unsubscribed by server', true);
      }
    }
  }

  _onReply(conn, msg) {
    if (msg.id === CONNECT_ID && !conn.connected) { this._onConnectReply(conn, msg); return; }
    const p = this._pending.get(msg.id);
    if (!p) return;
    this._pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.error) p.reject(toError(msg.error));
    else p.resolve(msg.result !== undefined ? msg.result : {});
  }

  _onConnectReply(conn, msg) {
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    if (msg.error) {
      const e = msg.error;
      conn.close();
      const code = e.code === 109 ? 3503 : e.code === 101 ? 3500 : e.temporary ? 3000 : 3501;
      this._emitError(e);
      this._connClosed(conn, code, 'connect refused: ' + (e.message || e.code));
      return;
    }
    const res = msg.result || {};
    conn.connected = true;
    conn.lastActivity = Date.now();
    this._pingMs = (typeof res.ping === 'number' ? res.ping : 0) * 1000;
    this._pong = !!res.pong;
    // The backoff starts over only once the connection has lived a while: one that dies at once
    // after every connect reply (say, each command POST gets 404) must not reconnect in a tight loop.
    clearTimeout(this._stableTimer);
    this._stableTimer = setTimeout(() => { if (this._conn === conn) this._attempt = 0; }, STABLE_MS);
    this._failuresInRow = 0;
    this._worked.add(conn.name);
    this._connectResult = {...res, transport: conn.name};
    this._setState('connected');
    this._emit('connected', this._connectResult);
    if (this._pingMs > 0) {
      const limit = this._pingMs + 5000;
      this._watchdog = setInterval(() => {
        if (this._conn === conn && Date.now() - conn.lastActivity > limit) {
          this._log('nothing from the server for', limit, 'ms: reconnecting');
          conn.close();
          this._connClosed(conn, 0, 'no ping from server');
        }
      }, 1000);
    }
    if (conn.name === 'longpoll') {
      conn.restartPoll();
    } else {
      const results = res.subs || {};
      for (const sub of this._subs.values()) {
        if (sub.state !== 'subscribing') continue;
        const r = results[sub.channel];
        if (r && r.error) this._onSubscribeError(sub, sub._gen, toError(r.error));
        else if (r) this._onSubscribeResult(sub, sub._gen, sub._since, r);
        else this._sendSubscribe(sub);  // subscribed while connecting, or not answered in connect
      }
    }
    // Requests made while disconnected, and those in flight when the last connection died: send now.
    const cmds = [];
    for (const p of this._pending.values()) {
      if (p.sentOn !== conn) { p.sentOn = conn; cmds.push(p.cmd); }
    }
    if (cmds.length) conn.send(cmds);
  }

  _sendSubscribe(sub) {
    const conn = this._conn;
    if (!conn || !conn.connected || conn.name === 'longpoll' || sub.state === 'unsubscribed') return;
    sub.state = 'subscribing';
    const gen = ++sub._gen;
    sub._buffer = [];
    const since = this._posFor(sub);
    sub._since = since;
    const params = {channel: sub.channel};
    if (since) params.since = since;
    this._call('subscribe', params, true).then(
      res => this._onSubscribeResult(sub, gen, since, res),
      err => this._onSubscribeError(sub, gen, err));
  }

  _onSubscribeResult(sub, gen, since, res) {
    if (sub.state === 'unsubscribed' || gen !== sub._gen) return;
    const recovering = !!since;
    const recovered = recovering && res.recovered === true;
    if (recovered) {
      for (const pub of res.publications || []) sub._deliver(pub, res.epoch);
      if (typeof res.offset === 'number' && sub._pos && res.offset > sub._pos.offset) sub._pos.offset = res.offset;
    } else {
      sub._pos = typeof res.offset === 'number' ? {offset: res.offset, epoch: res.epoch} : null;
    }
    sub.state = 'subscribed';
    const buffered = sub._buffer;
    sub._buffer = [];
    for (const obj of buffered) this._channelPush(sub, obj);
    const ctx = {channel: sub.channel, recovering, recovered, offset: res.offset, epoch: res.epoch, transport: this.transport};
    if (recovering && !recovered) {
      sub.unrecovered = true;
      sub._emit('unrecovered', {channel: sub.channel, offset: res.offset, epoch: res.epoch});
    }
    sub._emit('subscribed', ctx);
  }

  _onSubscribeError(sub, gen, err) {
    if (sub.state === 'unsubscribed' || gen !== sub._gen) return;
    err = toError(err);
    if (err.code === 'closed' || err.code === 'timeout') return;  // the next connection re-subscribes
    sub._emit('error', err);
    if (err.temporary || err.code === 100) {
      const delay = this._opts.minReconnectDelay * (1 + Math.random());
      setTimeout(() => { if (sub._gen === gen && sub.state === 'subscribing') this._sendSubscribe(sub); }, delay);
      return;
    }
    this._unsubscribe(sub, err.code, err.message, true);
  }

  _unsubscribe(sub, code, reason, byServer) {
    if (sub.state === 'unsubscribed') return;
    sub.state = 'unsubscribed';
    sub._gen++;
    sub._buffer = [];
    if (this._subs.get(sub.channel) === sub) this._subs.delete(sub.channel);
    const conn = this._conn;
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
    const subs = {}, probe = [];
    for (const sub of this._subs.values()) {
      if (sub.state === 'unsubscribed') continue;
      const pos = this._posFor(sub);
      subs[sub.channel] = pos || {};
      if (sub.state === 'subscribing' && sub._lpConn !== conn) {
        sub._lpConn = conn;
        sub._since = pos;
        if (pos) {
          sub.state = 'subscribed';
          sub._emit('subscribed', {channel: sub.channel, recovering: true, recovered: true, offset: pos.offset, epoch: pos.epoch, transport: 'longpoll'});
        }
      }
      if (sub.state === 'subscribing' && !pos) probe.push(sub);
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
      sub._pos = typeof p.offset === 'number' ? {offset: p.offset, epoch: p.epoch} : null;
      if (had && p.recovered === false) {
        sub.unrecovered = true;
        sub._emit('unrecovered', {channel: sub.channel, offset: p.offset, epoch: p.epoch});
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
      this._unsubscribe(sub, item.unsubscribe.code, item.unsubscribe.reason || 'unsubscribed by server', true);
    }
  }

  _call(method, params, connScoped = false) {
    return new Promise((resolve, reject) => {
      if (this._state === 'closed' && !connScoped) {
        reject(new SwitchboardError('closed', 'client is closed; call connect()'));
        return;
      }
      const conn = this._conn;
      if (connScoped && !(conn && conn.connected)) { reject(new SwitchboardError('closed', 'not connected')); return; }
      const id = this._nextId++;
      const cmd = {id, [method]: params};
      const p = {cmd, resolve, reject, connScoped, sentOn: null, timer: null};
      p.timer = setTimeout(() => {
        if (this._pending.get(id) === p) {
          this._pending.delete(id);
          reject(new SwitchboardError('timeout', method + ': no reply within ' + this._opts.requestTimeout + ' ms', true));
        }
      }, this._opts.requestTimeout);
      this._pending.set(id, p);
      if (conn && conn.connected) { p.sentOn = conn; conn.send([cmd]); }
    });
  }

  _rejectCommands(cmds, err) {
    for (const c of cmds) {
      const p = this._pending.get(c.id);
      if (!p) continue;
      this._pending.delete(c.id);
      clearTimeout(p.timer);
      p.reject(toError(err));
    }
  }

  _rejectAll(err) {
    const all = [...this._pending.values()];
    this._pending.clear();
    for (const p of all) { clearTimeout(p.timer); p.reject(err); }
  }

  _connClosed(conn, code, reason, serverReconnect) {
    if (conn !== this._conn) return;
    this._conn = null;
    this._stopConnTimers();
    const wasConnected = conn.connected;
    code = typeof code === 'number' ? code : 0;
    // Connection-scoped commands (subscribe/unsubscribe) die with it; requests wait for the next connection.
    for (const [id, p] of [...this._pending]) {
      if (p.sentOn !== conn) continue;
      if (p.connScoped) {
        this._pending.delete(id);
        clearTimeout(p.timer);
        p.reject(new SwitchboardError('closed', 'connection closed'));
      } else {
        p.sentOn = null;
      }
    }
    for (const sub of this._subs.values()) {
      if (sub.state === 'subscribed') sub.state = 'subscribing';
      sub._gen++;
      sub._buffer = [];
    }
    // No reconnect for 3500-3999 (and 1002/1007/1009), nor when a `disconnect` push says `reconnect: false`.
    const terminal = isTerminal(code) || serverReconnect === false;
    this._log('connection over', conn.name, code, reason, wasConnected ? '(was connected)' : '(never connected)');
    if (terminal) {
      this._rejectAll(new SwitchboardError('closed', 'disconnected: ' + code + ' ' + reason));
      this._setState('closed');
      this._emit('disconnected', {code, reason, reconnect: false, transport: conn.name});
      return;
    }
    // Fall back to the next transport when this one cannot open (and never worked) or failed twice running.
    let switched = false, wrapped = false;
    if (!wasConnected) {
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
    this._setState('disconnected');
    this._emit('disconnected', {code, reason, reconnect: true, transport: conn.name});
    let delay;
    if (switched && !wrapped) {
      delay = 0;  // try the next transport at once
    } else {
      let cap = Math.min(this._opts.maxReconnectDelay, this._opts.minReconnectDelay * Math.pow(2, this._attempt));
      if (code === 3001 || code === 3002) cap = Math.max(cap, Math.min(this._opts.maxReconnectDelay, 4 * this._opts.minReconnectDelay));
      delay = Math.random() * cap;  // full jitter
      this._attempt = Math.min(this._attempt + 1, 30);
    }
    this._log('reconnecting in', Math.round(delay), 'ms');
    this._reconnectTimer = setTimeout(() => { this._reconnectTimer = null; this._startAttempt(); }, delay);
  }
}

export default Switchboard;
