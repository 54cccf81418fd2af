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
// The file is one module in clearly separated sections, each of which could
// be its own file (the node serves this one file, compiled into its binary):
//
//   1. errors            SwitchboardError, terminal codes
//   2. environment       WebSocket, EventSource, fetch, timers, window events: injectable (options.env)
//   3. helpers           framing, channel names, endpoints, sizes
//   4. backoff           Backoff (full or equal jitter)
//   5. request queue     splitBatches, PostQueue: bodies capped below the node's limit
//   6. emitter
//   7. subscription      Subscription
//   8. transports        WebSocketConn, SseConn, LongPollConn (one connection attempt each)
//   9. the client        Switchboard: the connection state machine
//
// Unit tests: clients/js/test/ (`node --test clients/js/test/*.test.mjs`), with fake
// timers and a fake server injected through `options.env`.
// See README.md next to this file for the rules it follows (fallback,
// reconnect, recovery) and docs/transports.md for the HTTP contract.

/** Version string sent in `connect`. */
export const VERSION = 'switchboard.js/1.1';

const ALL_TRANSPORTS = ['websocket', 'sse', 'longpoll'];
const CONNECT_ID = 1;            // the connect command's id on every transport (SSE implies it)
const CHANNEL_MAX_BYTES = 255;
const STABLE_MS = 5000;          // a connection that lived this long resets the reconnect backoff
const MAX_HELD = 5000;           // pushes held before a subscribe reply; beyond that the connection is remade

// ===========================================================================
// 1. Errors
// ===========================================================================

/**
 * An error from the server (a reply's `error`) or from the client itself.
 * Server errors carry the protocol's numeric `code` (101 unauthorized, 103
 * permission denied, ...). Client-side failures use string codes:
 * `'timeout'` (no reply within `requestTimeout`), `'closed'` (close() was
 * called, or the server ended the connection for good), `'bad_request'`
 * (refused by the client before sending), `'too_large'` (a command larger
 * than `maxMessageSize`, refused before sending), `'transport'` (an HTTP
 * answer the protocol has no reply for, e.g. 413), `'destroyed'`.
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

export function toError(e) {
  if (e instanceof SwitchboardError) return e;
  if (e && typeof e === 'object' && 'code' in e) return new SwitchboardError(e.code, e.message, e.temporary);
  return new SwitchboardError('transport', String(e && e.message || e));
}

/**
 * Codes after which the client does not reconnect on its own: protocol
 * 3500-3999 and the RFC 6455 client bugs 1002/1007. Not 1009 (message too
 * big): the client refuses oversize commands itself, so a 1009 means a
 * smaller limit on the node, and reconnecting is right.
 */
export function isTerminal(code) {
  return (code >= 3500 && code <= 3999) || code === 1007 || code === 1002;
}

// ===========================================================================
// 2. Environment: everything the client takes from the browser, injectable
// ===========================================================================

/**
 * @typedef {Object} SwitchboardEnv
 * @property {Function} [WebSocket]
 * @property {Function} [EventSource]
 * @property {Function} [fetch]
 * @property {Function} [AbortController]
 * @property {(fn: Function, ms: number) => *} [setTimeout]
 * @property {(t: *) => void} [clearTimeout]
 * @property {() => number} [now]
 * @property {() => number} [random]
 * @property {EventTarget|null} [window]    `online`, `offline`, `pageshow`, `pagehide` come from here
 * @property {Object|null} [document]       `visibilitychange` and `visibilityState`
 * @property {{onLine?: boolean}|null} [navigator]
 */

/** The browser's objects, overridden by `over` (tests pass fakes). */
export function makeEnv(over) {
  const g = globalThis;
  const env = {
    WebSocket: g.WebSocket,
    EventSource: g.EventSource,
    fetch: typeof g.fetch === 'function' ? (...a) => g.fetch(...a) : undefined,
    AbortController: g.AbortController,
    setTimeout: (fn, ms) => g.setTimeout(fn, ms),
    clearTimeout: t => g.clearTimeout(t),
    now: () => Date.now(),
    random: () => Math.random(),
    window: typeof g.addEventListener === 'function' ? g : null,
    document: g.document || null,
    navigator: g.navigator || null,
  };
  return Object.assign(env, over || {});
}

// ===========================================================================
// 3. Helpers
// ===========================================================================

// A 401 from /poll or /rpc for an expired token: error 109, or 101 "token expired" (what nodes up
// to 0.1 answer over HTTP), so that getToken() is asked for a new one instead of the client stopping.
function isTokenExpired(err) {
  return err.code === 109 || (err.code === 101 && /token expired/i.test(String(err.message)));
}

function randomId(bytes = 8) {
  const a = new Uint8Array(bytes);
  if (globalThis.crypto && crypto.getRandomValues) crypto.getRandomValues(a);
  else for (let i = 0; i < bytes; i++) a[i] = Math.floor(Math.random() * 256);
  return Array.from(a, b => b.toString(16).padStart(2, '0')).join('');
}

const encoder = new TextEncoder();

/** UTF-8 length of a string. */
export function byteLength(s) { return encoder.encode(s).length; }

/** JSON objects of a frame / SSE event / body: one per line, non-objects skipped. */
export function parseLines(text, out = []) {
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
  if (byteLength(ch) > CHANNEL_MAX_BYTES) return false;
  return !/[\u0000-\u001f\u007f]/.test(ch);
}

/** Derive the endpoint URLs from a base (http(s)://host[:port][/prefix], or ws(s)://.../ws). */
export function endpoints(url) {
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

// ===========================================================================
// 4. Backoff
// ===========================================================================

/**
 * Exponential backoff: attempt n waits up to min(max, min * 2^n).
 * `full` jitter draws from [0, cap); otherwise [cap/2, cap) (never a tight loop).
 */
export class Backoff {
  constructor(minMs, maxMs, random, full = true) {
    this.min = minMs; this.max = maxMs; this.random = random || Math.random; this.full = full;
    this.attempt = 0;
  }

  /** The next delay in ms; `floorCap` raises the cap (drain, rebalance). */
  next(floorCap = 0) {
    let cap = Math.min(this.max, this.min * Math.pow(2, this.attempt));
    if (floorCap) cap = Math.max(cap, Math.min(this.max, floorCap));
    this.attempt = Math.min(this.attempt + 1, 30);
    const r = this.random();
    return this.full ? r * cap : cap / 2 + r * cap / 2;
  }

  reset() { this.attempt = 0; }
}

// ===========================================================================
// 5. Request queue: bodies capped below the node's message limit
// ===========================================================================

/**
 * Split commands into bodies (JSON lines) of at most `maxBytes` each, in
 * order. A command that alone is larger goes alone (the caller refuses such
 * commands before they get here).
 * @returns {{cmds: Object[], text: string}[]}
 */
export function splitBatches(cmds, maxBytes) {
  const out = [];
  let cur = [], lines = [], size = 0;
  for (const c of cmds) {
    const line = JSON.stringify(c);
    const n = byteLength(line);
    if (cur.length && size + 1 + n > maxBytes) {
      out.push({cmds: cur, text: lines.join('\n')});
      cur = []; lines = []; size = 0;
    }
    size += (cur.length ? 1 : 0) + n;
    cur.push(c); lines.push(line);
  }
  if (cur.length) out.push({cmds: cur, text: lines.join('\n')});
  return out;
}

/**
 * Serialises command POSTs (one in flight; what is queued meanwhile goes in
 * the next body, at most `maxBytes` of it) so that commands reach the server
 * in the order they were sent.
 */
export class PostQueue {
  constructor(post, maxBytes) { this.post = post; this.maxBytes = maxBytes; this.queue = []; this.busy = false; this.stopped = false; }

  push(cmds) { this.queue.push(...cmds); this.kick(); }

  kick() {
    if (this.busy || this.stopped || this.queue.length === 0) return;
    const first = splitBatches(this.queue, this.maxBytes)[0];
    this.queue.splice(0, first.cmds.length);
    this.busy = true;
    Promise.resolve().then(() => this.post(first.cmds, first.text)).catch(() => {}).then(() => {
      this.busy = false;
      this.kick();
    });
  }

  stop() { this.stopped = true; this.queue = []; }
}

/**
 * fetch with one deadline for the whole exchange, body included (a stalled
 * body must not hang a connection), and a cap on the body's size.
 * Resolves `{status, text}`; rejects on network error, abort or deadline.
 */
export async function fetchText(env, url, init, ms, extraSignal, maxBytes = 16 << 20) {
  const ctrl = new env.AbortController();
  let timedOut = false;
  const timer = env.setTimeout(() => { timedOut = true; ctrl.abort(); }, ms);
  const onAbort = () => ctrl.abort();
  if (extraSignal) {
    if (extraSignal.aborted) ctrl.abort();
    else extraSignal.addEventListener('abort', onAbort);
  }
  // Every await below races the abort: a body read that ignores the signal cannot outlive the deadline.
  const aborted = new Promise((_, reject) => {
    if (ctrl.signal.aborted) reject(new Error('aborted'));
    else ctrl.signal.addEventListener('abort', () => reject(new Error('aborted')));
  });
  aborted.catch(() => {});
  const race = p => Promise.race([p, aborted]);
  try {
    const resp = await race(env.fetch(url, {...init, signal: ctrl.signal, cache: 'no-store', credentials: 'same-origin'}));
    let text;
    if (resp.body && typeof resp.body.getReader === 'function') {
      const reader = resp.body.getReader();
      const parts = [];
      let n = 0;
      const dec = new TextDecoder();
      for (;;) {
        const {done, value} = await race(reader.read());
        if (done) break;
        n += value.length;
        if (n > maxBytes) { try { reader.cancel(); } catch (e) { /* gone */ } throw new Error('answer larger than ' + maxBytes + ' bytes'); }
        parts.push(dec.decode(value, {stream: true}));
      }
      parts.push(dec.decode());
      text = parts.join('');
    } else {
      text = await race(resp.text());
      if (text.length > maxBytes) throw new Error('answer larger than ' + maxBytes + ' bytes');
    }
    return {status: resp.status, text};
  } catch (e) {
    if (timedOut) throw new Error('no complete answer within ' + ms + ' ms');
    throw e;
  } finally {
    env.clearTimeout(timer);
    if (extraSignal) extraSignal.removeEventListener('abort', onAbort);
  }
}

function errorFromBody(text, status, fallbackCode) {
  try {
    const doc = JSON.parse(text);
    if (doc && doc.error) return toError(doc.error);
  } catch (e) { /* not JSON */ }
  return new SwitchboardError(fallbackCode, 'HTTP ' + status, fallbackCode === 'transport');
}

function jsonOrNull(text) { try { return JSON.parse(text); } catch (e) { return null; } }

// ===========================================================================
// 6. Tiny event emitter
// ===========================================================================

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

  /** Remove a listener added with on(); without `fn`, every listener of `event`; without both, all. */
  off(event, fn) {
    if (event === undefined) { this._handlers.clear(); return; }
    const list = this._handlers.get(event);
    if (!list) return;
    if (fn === undefined) { this._handlers.delete(event); return; }
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

// ===========================================================================
// 7. Subscription
// ===========================================================================

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
 * @property {boolean} recovering  true when a position was sent (a re-subscribe, or `since`)
 * @property {boolean} recovered   true when every missed publication was delivered
 * @property {number} [offset]
 * @property {string} [epoch]
 * @property {string} transport
 */

/**
 * @typedef {Object} SubscriptionOptions
 * @property {{offset: number, epoch: string}} [since]  start from this position (recover what came after it)
 * @property {(ctx: {channel: string}) => Promise<string>|string} [getToken]  subscription token, asked before each subscribe
 * @property {(pub: Publication) => void} [onPublication]  each publication once, in offset order
 * @property {(info: {channel: string, client: string, user: string}) => void} [onJoin]
 * @property {(info: {channel: string, client: string, user: string}) => void} [onLeave]
 * @property {(ctx: {channel: string, code: number, reason: string}) => void} [onSubscribing]  (re)subscribing from now on
 * @property {(ctx: SubscribedContext) => void} [onSubscribed]  after every (re)subscribe
 * @property {(ctx: {channel: string, code: number, reason: string}) => void} [onUnsubscribed]  the subscription is over
 * @property {(err: SwitchboardError) => void} [onError]
 * @property {(ctx: {channel: string, offset?: number, epoch?: string}) => void} [onUnrecovered]
 *   publications were missed for good (recovered: false); the subscription continues from the new position
 */

/**
 * One channel subscription, made by {@link Switchboard#subscribe}. It lives
 * across reconnects: the client re-subscribes it from its last position.
 * After `unsubscribe()`, `subscribe()` makes it follow the channel again
 * from the position it had.
 * Events (also via `on(event, fn)`): `publication`, `join`, `leave`,
 * `subscribing`, `subscribed`, `unsubscribed`, `error`, `unrecovered`.
 */
export class Subscription extends Emitter {
  /** @param {Switchboard} client @param {string} channel @param {SubscriptionOptions} opts */
  constructor(client, channel, opts) {
    super();
    this._client = client;
    /** The channel name. @type {string} */
    this.channel = channel;
    /** 'subscribing' | 'subscribed' | 'unsubscribed' @type {string} */
    this.state = 'subscribing';
    /** Set when publications were missed for good at some (re)subscribe; stays true. */
    this.unrecovered = false;
    const s = opts && opts.since;
    this._pos = s && typeof s.offset === 'number' && typeof s.epoch === 'string' ? {offset: s.offset, epoch: s.epoch} : null;
    this._since = null;      // position sent with the (re)subscribe in flight
    this._buffer = [];       // pushes that came before the subscribe reply
    this._gen = 0;           // which subscribe request is current
    this._getToken = opts && typeof opts.getToken === 'function' ? opts.getToken : null;
    this._token = null;
    this._retry = null;      // timer of a retry after a temporary error
    this._backoff = null;    // made by the client (its delays)
    this._refreshTimer = null;
    const map = {onPublication: 'publication', onJoin: 'join', onLeave: 'leave', onSubscribing: 'subscribing',
      onSubscribed: 'subscribed', onUnsubscribed: 'unsubscribed', onError: 'error', onUnrecovered: 'unrecovered'};
    for (const [k, ev] of Object.entries(map)) {
      if (opts && typeof opts[k] === 'function') this.on(ev, opts[k]);
    }
  }

  /** Position of the last publication delivered: `{offset, epoch}` or null. */
  get position() { return this._pos ? {...this._pos} : null; }

  /** Stop following the channel (tells the server). The position is kept for a later subscribe(). */
  unsubscribe() { this._client._unsubscribe(this, 0, 'unsubscribe called'); }

  /** Follow the channel again after unsubscribe(), from the position kept. No-op unless unsubscribed. */
  subscribe() { this._client._resubscribe(this); }

  /**
   * Resolves when the subscription is subscribed (at once when it is);
   * rejects when it ends, or after `timeoutMs` when given.
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  ready(timeoutMs) {
    if (this.state === 'subscribed') return Promise.resolve();
    if (this.state === 'unsubscribed') return Promise.reject(new SwitchboardError('closed', 'unsubscribed'));
    const env = this._client._env;
    return new Promise((resolve, reject) => {
      let timer = null;
      const done = () => { offS(); offU(); if (timer !== null) env.clearTimeout(timer); };
      const offS = this.on('subscribed', () => { done(); resolve(); });
      const offU = this.on('unsubscribed', ctx => { done(); reject(new SwitchboardError(ctx.code || 'closed', ctx.reason)); });
      if (typeof timeoutMs === 'number') {
        timer = env.setTimeout(() => { done(); reject(new SwitchboardError('timeout', 'not subscribed within ' + timeoutMs + ' ms', true)); }, timeoutMs);
      }
    });
  }

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

// ===========================================================================
// 8. Transports. Each one is one connection attempt; the client makes a new
// one for every attempt. They report to the client through:
//   client._connMessage(conn, obj)   every JSON object received
//   client._connClosed(conn, code, reason)   once, when the connection is over
// and offer send(commands), close() (silent), and `opened` (the transport
// itself opened: WS open event, first SSE event, long-poll handshake answer).
// ===========================================================================

class WebSocketConn {
  constructor(client, params) {
    this.name = 'websocket';
    this.client = client;
    this.env = client._env;
    this.params = params;
    this.opened = false;
    this.connected = false;
    this.done = false;
    this.ws = null;
  }

  open() {
    let ws;
    try {
      ws = new this.env.WebSocket(this.client._urls.ws);
    } catch (e) {
      this.env.setTimeout(() => this._end(0, 'cannot create WebSocket: ' + e), 0);
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

  // Several commands per frame, each frame at most maxMessageSize bytes.
  send(cmds) {
    for (const b of splitBatches(cmds, this.client._opts.maxMessageSize)) this._sendText(b.text);
  }

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

class SseConn {
  constructor(client, params) {
    this.name = 'sse';
    this.client = client;
    this.env = client._env;
    this.params = params;
    this.opened = false;
    this.connected = false;
    this.done = false;
    this.session = null;
    this.es = null;
    this.posts = new PostQueue((batch, text) => this._post(batch, text), client._opts.maxMessageSize);
  }

  open() {
    const url = this.client._urls.sse + '?connect=' + encodeURIComponent(JSON.stringify(this.params));
    let es;
    try {
      es = new this.env.EventSource(url);
    } catch (e) {
      this.env.setTimeout(() => this._end(0, 'cannot create EventSource: ' + e), 0);
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

  async _post(batch, text) {
    if (this.done) return;
    const url = this.client._urls.sse + '?session=' + encodeURIComponent(this.session || '');
    let resp;
    try {
      resp = await fetchText(this.env, url, {method: 'POST', headers: {'Content-Type': 'text/plain'}, body: text},
        this.client._opts.requestTimeout);
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
    this.client._rejectCommands(batch, errorFromBody(resp.text, resp.status, resp.status === 400 ? 107 : 'transport'));
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
    this.env = client._env;
    this.params = params;
    this.opened = false;
    this.connected = false;
    this.done = false;
    this.pollCtrl = null;
    this.polling = false;
    this.restart = false;
    this.restartTimer = null;
    this.posts = new PostQueue((batch, text) => this._rpc(batch, text, false), client._opts.maxMessageSize);
  }

  _headers() {
    const h = {'Content-Type': 'text/plain'};
    if (this.params.token) h.Authorization = 'Bearer ' + this.params.token;
    return h;
  }

  // The handshake: an rpc `ping` checks the endpoint and the token; its answer stands for the connect reply.
  open() {
    const cmd = {id: CONNECT_ID, ping: {}};
    this._rpc([cmd], JSON.stringify(cmd), true);
  }

  send(cmds) { if (cmds.length) this.posts.push(cmds); }

  async _rpc(batch, text, handshake) {
    if (this.done) return;
    let resp;
    try {
      resp = await fetchText(this.env, this.client._urls.rpc, {method: 'POST', headers: this._headers(), body: text},
        this.client._opts.requestTimeout);
    } catch (e) {
      if (!this.done) this._end(0, (handshake ? 'cannot open: ' : 'rpc failed: ') + e);
      return;
    }
    if (this.done) return;
    if (resp.status === 401) {
      const err = errorFromBody(resp.text, 401, 101);
      this._end(isTokenExpired(err) ? 3503 : 3500, err.message);
      return;
    }
    if (resp.status === 503) { this._end(3001, 'node draining'); return; }
    if (resp.status !== 200) {
      if (handshake || resp.status >= 500 || resp.status === 404 || resp.status === 403) {
        this._end(0, 'rpc answered HTTP ' + resp.status);
        return;
      }
      this.client._rejectCommands(batch, errorFromBody(resp.text, resp.status, resp.status === 400 ? 107 : 'transport'));
      return;
    }
    const replies = jsonOrNull(resp.text);
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
    this.env.clearTimeout(this.restartTimer);
    this.restartTimer = this.env.setTimeout(() => {  // a burst of subscribe() calls makes one new poll
      if (this.done) return;
      if (this.polling && this.pollCtrl) { this.restart = true; this.pollCtrl.abort(); }
      else this._loop();
    }, 5);
  }

  _sleep(ms) { return new Promise(r => { this.sleepTimer = this.env.setTimeout(r, ms); }); }

  async _loop() {
    if (this.polling || this.done) return;
    this.polling = true;
    let tooMany = 0;
    const opts = this.client._opts;
    try {
      for (;;) {
        if (this.done) return;
        const {subs, probe} = this.client._pollSubs(this);
        if (this.done) return;
        if (Object.keys(subs).length === 0) return;  // nothing to follow: idle until subscribe()
        // A channel never positioned yet: poll with timeout 0, which answers at once with its position
        // (or nothing, when it keeps no history); then poll as usual.
        const timeout = probe.length ? 0 : Math.max(0, Math.min(60, Math.round(opts.pollTimeout / 1000)));
        const body = {subs, timeout, client: this.client._pollClient};
        this.restart = false;
        this.pollCtrl = new this.env.AbortController();
        const started = this.env.now();
        let resp;
        try {
          // One deadline for the whole poll, its body included: a body that stalls ends the connection.
          resp = await fetchText(this.env, this.client._urls.poll, {
            method: 'POST', headers: this._headers(), body: JSON.stringify(body),
          }, timeout * 1000 + 10000, this.pollCtrl.signal);
        } catch (e) {
          if (this.done) return;
          if (this.restart) continue;  // aborted for a new set of channels
          this._end(0, 'poll failed: ' + e);
          return;
        }
        if (this.done) return;
        if (this.restart) continue;
        if (resp.status === 429) {  // an aborted poll may still count on the node for a moment
          if (++tooMany > 10) { this._end(0, 'poll refused with 429 ten times'); return; }
          await this._sleep(200 + this.env.random() * 400 * tooMany);
          continue;
        }
        tooMany = 0;
        if (resp.status === 401) {
          const err = errorFromBody(resp.text, 401, 101);
          this._end(isTokenExpired(err) ? 3503 : 3500, err.message);
          return;
        }
        if (resp.status === 503) { this._end(3001, 'node draining'); return; }
        if (resp.status === 400) {
          const err = errorFromBody(resp.text, 400, 107);
          this.client._emitError(err);
          this._end(3501, 'poll refused: ' + err.message);
          return;
        }
        if (resp.status !== 200) { this._end(0, 'poll answered HTTP ' + resp.status); return; }
        const items = jsonOrNull(resp.text);
        if (!Array.isArray(items)) { this._end(0, 'poll answer is not a JSON array'); return; }
        for (const item of items) {
          if (this.done) return;
          if (item && typeof item === 'object') this.client._connMessage(this, item);
        }
        if (this.done) return;
        if (probe.length) { this.client._pollProbed(probe); continue; }
        if (items.length === 0 && this.env.now() - started < 200 && !this.restart) {
          await this._sleep(500);  // never spin on a node that answers [] at once
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
    this.env.clearTimeout(this.restartTimer);
    this.posts.stop();
    if (this.pollCtrl) { try { this.pollCtrl.abort(); } catch (e) { /* done */ } }
  }
}

const TRANSPORT_CLASSES = {websocket: WebSocketConn, sse: SseConn, longpoll: LongPollConn};

// ===========================================================================
// 9. The client: connection state machine
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
    this._pending = new Map();       // id -> {cmd, resolve, reject, timer, connScoped, sentOn}
    this._nextId = CONNECT_ID + 1;
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
    const p = this._pending.get(msg.id);
    if (!p) return;
    this._pending.delete(msg.id);
    this._clear(p.timer);
    if (msg.error) p.reject(toError(msg.error));
    else p.resolve(msg.result !== undefined ? msg.result : {});
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
    const cmds = [];
    for (const p of this._pending.values()) {
      if (p.sentOn !== conn) { p.sentOn = conn; cmds.push(p.cmd); }
    }
    if (cmds.length) conn.send(cmds);
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
      for (const p of this._pending.values()) if (p.sentOn === conn) p.sentOn = null;
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
    for (const [id, p] of [...this._pending]) {
      if (p.connScoped) { this._pending.delete(id); this._clear(p.timer); p.reject(new SwitchboardError('closed', reason)); }
      else p.sentOn = null;
    }
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

  _call(method, params, connScoped = false) {
    return new Promise((resolve, reject) => {
      if (this._destroyed) { reject(new SwitchboardError('destroyed', 'client destroyed')); return; }
      if (this._state === 'closed' && !connScoped) {
        reject(new SwitchboardError('closed', 'client is closed; call connect()'));
        return;
      }
      const conn = this._conn;
      if (connScoped && !(conn && conn.connected)) { reject(new SwitchboardError('closed', 'not connected')); return; }
      const id = this._nextId++;
      const cmd = {id, [method]: params};
      let size;
      try { size = byteLength(JSON.stringify(cmd)); } catch (e) {
        reject(new SwitchboardError('bad_request', method + ': params are not JSON: ' + e.message));
        return;
      }
      if (size > this._opts.maxMessageSize) {
        reject(new SwitchboardError('too_large', method + ' of ' + size + ' bytes is over the limit of ' + this._opts.maxMessageSize + ' bytes'));
        return;
      }
      const p = {cmd, resolve, reject, connScoped, sentOn: null, timer: null};
      p.timer = this._after(this._opts.requestTimeout, () => {
        if (this._pending.get(id) === p) {
          this._pending.delete(id);
          reject(new SwitchboardError('timeout', method + ': no reply within ' + this._opts.requestTimeout + ' ms', true));
        }
      });
      this._pending.set(id, p);
      if (conn && conn.connected) { p.sentOn = conn; conn.send([cmd]); }
    });
  }

  _rejectCommands(cmds, err) {
    for (const c of cmds) {
      const p = this._pending.get(c.id);
      if (!p) continue;
      this._pending.delete(c.id);
      this._clear(p.timer);
      p.reject(toError(err));
    }
  }

  _rejectAll(err) {
    const all = [...this._pending.values()];
    this._pending.clear();
    for (const p of all) { this._clear(p.timer); p.reject(err); }
  }

  // -- internals: a connection ended ---------------------------------------------

  _connClosed(conn, code, reason, serverReconnect) {
    if (conn !== this._conn) return;
    this._conn = null;
    this._stopConnTimers();
    this._stopUpgrade();
    const wasConnected = conn.connected;
    code = typeof code === 'number' ? code : 0;
    // Connection-scoped commands (subscribe/unsubscribe) die with it; requests wait for the next connection.
    for (const [id, p] of [...this._pending]) {
      if (p.sentOn !== conn) continue;
      if (p.connScoped) {
        this._pending.delete(id);
        this._clear(p.timer);
        p.reject(new SwitchboardError('closed', 'connection closed'));
      } else {
        p.sentOn = null;
      }
    }
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

export default Switchboard;
