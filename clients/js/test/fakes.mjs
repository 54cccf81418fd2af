// Fakes for the client's unit tests: fake timers (a FakeClock installed as the
// global setTimeout/setInterval/Date.now, so that the client's timers are
// under the test's control; no node:test mock timers, so Node 18 runs them too),
// a fake server speaking protocol v1 over a fake WebSocket, a fetch-read SSE stream and
// fetch, and a fake window/document for online/offline and page lifecycle.
//
// The fakes are installed both as globals and through `options.env`, so the
// same tests run against an older client that only knew globals
// (SB_CLIENT=/path/to/switchboard.js node --test clients/js/test/*.test.mjs): that is how
// each bug's test was shown to fail before its fix.

import path from 'node:path';
import {fileURLToPath, pathToFileURL} from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The client module under test (SB_CLIENT overrides, to run the tests against another version). */
export async function loadClient() {
  const file = process.env.SB_CLIENT || path.join(here, '..', 'switchboard.js');
  return import(pathToFileURL(path.resolve(file)).href);
}

const realSetImmediate = setImmediate;

/** Timers in fake time: `tick(ms)` runs what falls due, in order. */
export class FakeClock {
  constructor(now) { this.t = now; this.timers = new Map(); this.seq = 1; }

  setTimeout(fn, ms, ...args) {
    const id = this.seq++;
    this.timers.set(id, {at: this.t + Math.max(0, Number(ms) || 0), fn, args, every: 0});
    return id;
  }

  setInterval(fn, ms, ...args) {
    const id = this.seq++;
    const every = Math.max(1, Number(ms) || 0);
    this.timers.set(id, {at: this.t + every, fn, args, every});
    return id;
  }

  clear(id) { this.timers.delete(id); }

  tick(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null, nextId = 0;
      for (const [id, e] of this.timers) {
        if (e.at <= end && (next === null || e.at < next.at || (e.at === next.at && id < nextId))) { next = e; nextId = id; }
      }
      if (!next) break;
      this.t = Math.max(this.t, next.at);
      if (next.every) next.at += next.every; else this.timers.delete(nextId);
      next.fn(...next.args);
    }
    this.t = end;
  }
}

let clock = null;

/** Let every pending promise callback and queued microtask run. */
export async function flush(rounds = 5) {
  for (let i = 0; i < rounds; i++) await new Promise(r => realSetImmediate(r));
}

/** Advance the fake clock by `ms`, in steps, running promise callbacks between steps. */
export async function advance(ms, step) {
  step = step || Math.max(1, Math.ceil(ms / 400));
  await flush();
  for (let t = 0; t < ms; t += step) {
    clock.tick(Math.min(step, ms - t));
    await flush(2);
  }
  await flush();
}

/**
 * Wait (in fake time) until `cond()` is true, advancing at most `maxMs`.
 * Throws when it never becomes true: the bound is the test's failure.
 */
export async function until(cond, maxMs = 60000, what = 'condition') {
  await flush();
  for (let t = 0; t <= maxMs; t += 10) {
    if (cond()) return;
    clock.tick(10);
    await flush(2);
  }
  throw new Error('timed out (fake ' + maxMs + ' ms) waiting for ' + what);
}

// ---------------------------------------------------------------------------
// The fake server
// ---------------------------------------------------------------------------

/**
 * A protocol v1 node in memory. Channels keep history (offset, epoch).
 * `hold` (a Set of method names) makes it never answer those commands;
 * `refuseWs` makes WebSocket fail before open; `connectSubsError` etc. shape answers.
 */
export class FakeServer {
  constructor() {
    this.channels = new Map();   // name -> {offset, epoch, pubs: [{offset, data}]}
    this.sessions = [];
    this.hold = new Set();
    this.refuseWs = false;
    this.stallWs = false;
    this.refuseSse = false;
    this.ping = 25;
    this.maxMessageSize = 65536;
    this.subscribeErrors = [];   // errors to answer the next subscribes with, in order
    this.log = [];               // every command received: {session, cmd}
    this.fetchHook = null;       // (url, init) => Response-like or undefined
    this.onCommand = null;       // (session, cmd) => void, before the command is handled
    this.tokenTTL = null;        // seconds: connect, subscribe, refresh and subRefresh results say {expires, ttl}
    this.sseResumeIds = false;   // SSE event ids as the node makes them (base64url of the session's positions), and
                                 // Last-Event-ID taken at a stream's connect (its positions win over `subs`)
    this.nextSession = 1;
  }

  channel(name) {
    if (!this.channels.has(name)) this.channels.set(name, {offset: 0, epoch: 'e1', pubs: []});
    return this.channels.get(name);
  }

  /** Publish (as the HTTP API would): pushed to every session subscribed. */
  publish(name, data) {
    const ch = this.channel(name);
    ch.offset++;
    const pub = {offset: ch.offset, data};
    ch.pubs.push(pub);
    for (const s of this.sessions) if (!s.closed && s.subs.has(name)) s.push({channel: name, pub});
    for (const w of [...(this.pollWaiters || [])]) if (w.channels.includes(name)) w.wake();
    return pub;
  }

  liveSessions() { return this.sessions.filter(s => !s.closed); }

  subscribeResult(name, since) {
    const ch = this.channel(name);
    const r = {offset: ch.offset, epoch: ch.epoch, recoverable: true, positioned: true};
    if (since) {
      if (since.epoch === ch.epoch && since.offset <= ch.offset) {
        r.recovered = true;
        r.publications = ch.pubs.filter(p => p.offset > since.offset);
      } else {
        r.recovered = false;
        r.publications = [];
      }
    }
    return r;
  }

  // A command from a session; returns the reply (or null when held).
  handle(session, cmd) {
    this.log.push({session, cmd});
    if (this.onCommand) this.onCommand(session, cmd);
    const method = Object.keys(cmd).find(k => k !== 'id');
    const p = cmd[method] || {};
    if (this.hold.has(method)) return null;
    const reply = r => ({id: cmd.id, result: r});
    const error = (code, message, temporary) => ({id: cmd.id, error: {code, message, temporary: !!temporary}});
    switch (method) {
      case 'connect': {
        session.connected = true;
        const res = {client: 'c' + session.id, node: 'n1', version: '1', ping: this.ping, pong: true};
        if (session.kind === 'sse') res.session = 's' + session.id;
        if (this.tokenTTL !== null && p.token) Object.assign(res, {expires: true, ttl: this.tokenTTL});
        if (p.subs) {
          res.subs = {};
          for (const [name, since] of Object.entries(p.subs)) {
            session.subs.add(name);
            res.subs[name] = this.subscribeResult(name, since && typeof since.offset === 'number' ? since : null);
          }
        }
        return reply(res);
      }
      case 'subscribe': {
        if (this.subscribeErrors.length) return error(...this.subscribeErrors.shift());
        if (session.subs.has(p.channel)) return error(105, 'already subscribed');
        session.subs.add(p.channel);
        const res = this.subscribeResult(p.channel, p.since);
        if (this.tokenTTL !== null && p.token) Object.assign(res, {expires: true, ttl: this.tokenTTL});
        return reply(res);
      }
      case 'refresh':
        return p.token ? reply(this.tokenTTL !== null ? {expires: true, ttl: this.tokenTTL} : {expires: false}) : error(107, 'token must be a non-empty string');
      case 'subRefresh':
        if (!session.subs.has(p.channel)) return error(107, 'not subscribed');
        return p.token ? reply(this.tokenTTL !== null ? {expires: true, ttl: this.tokenTTL} : {expires: false}) : error(107, 'token must be a non-empty string');
      case 'unsubscribe':
        session.subs.delete(p.channel);
        if (session.written) delete session.written[p.channel];
        return reply({});
      case 'publish': {
        const pub = this.publish(p.channel, p.data);
        return reply({offset: pub.offset, epoch: this.channel(p.channel).epoch});
      }
      case 'ping': return reply({});
      default: return error(104, 'method not found');
    }
  }

  /** Install the fakes as globals and return the `env` option that names them. */
  install() {
    const server = this;
    clock = new FakeClock(1000000);
    this.clock = clock;
    const win = new EventTarget();
    const doc = new EventTarget();
    doc.visibilityState = 'visible';
    const nav = {onLine: true};
    class WS extends FakeWebSocket { constructor(url) { super(server, url); } }
    const fetch = (url, init) => fakeFetch(server, url, init);
    this.WebSocket = WS;
    this.window = win;
    this.document = doc;
    this.navigator = nav;
    this.saved = {WebSocket: globalThis.WebSocket, fetch: globalThis.fetch,
      addEventListener: globalThis.addEventListener, removeEventListener: globalThis.removeEventListener,
      setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout,
      setInterval: globalThis.setInterval, clearInterval: globalThis.clearInterval};
    this.savedNow = Date.now;
    const c = clock;
    globalThis.setTimeout = (fn, ms, ...a) => c.setTimeout(fn, ms, ...a);
    globalThis.clearTimeout = id => c.clear(id);
    globalThis.setInterval = (fn, ms, ...a) => c.setInterval(fn, ms, ...a);
    globalThis.clearInterval = id => c.clear(id);
    Date.now = () => c.t;
    globalThis.WebSocket = WS;
    globalThis.fetch = fetch;
    globalThis.addEventListener = (...a) => win.addEventListener(...a);
    globalThis.removeEventListener = (...a) => win.removeEventListener(...a);
    return {WebSocket: WS, ReadableStream: globalThis.ReadableStream, fetch, window: win, document: doc, navigator: nav,
      setTimeout: (fn, ms) => c.setTimeout(fn, ms), clearTimeout: id => c.clear(id), now: () => c.t};
  }

  uninstall() {
    for (const s of this.sessions) s.closed = true;
    Object.assign(globalThis, this.saved);
    Date.now = this.savedNow;
    clock = null;
  }

  /** Fire a window event (`online`, `offline`, `pageshow` with persisted...). */
  fire(name, props = {}) {
    const e = new Event(name);
    for (const [k, v] of Object.entries(props)) Object.defineProperty(e, k, {value: v});
    (name === 'visibilitychange' ? this.document : this.window).dispatchEvent(e);
  }
}

class Session {
  constructor(server, kind, deliver) {
    this.server = server;
    this.id = server.nextSession++;
    this.kind = kind;
    this.subs = new Set();
    this.connected = false;
    this.closed = false;
    this.deliver = deliver;
    server.sessions.push(this);
  }

  push(obj) { if (!this.closed) queueMicrotask(() => { if (!this.closed) this.deliver(JSON.stringify(obj)); }); }

  commands(text) {
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      const cmd = JSON.parse(line);
      if (Object.keys(cmd).length === 0) continue;  // pong
      const r = this.server.handle(this, cmd);
      if (r) this.push(r);
    }
  }
}

export class FakeWebSocket {
  constructor(server, url) {
    this.server = server;
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    server.sockets = server.sockets || [];
    server.sockets.push(this);
    this.session = null;
    queueMicrotask(() => {
      if (this.readyState !== 0) return;
      if (server.refuseWs) { this._closed(1006, ''); return; }
      if (server.stallWs) return;  // a proxy that takes the handshake and never answers: stays CONNECTING
      this.readyState = 1;
      this.session = new Session(server, 'websocket', text => { if (this.readyState === 1 && this.onmessage) this.onmessage({data: text}); });
      if (this.onopen) this.onopen({});
    });
  }

  send(text) {
    if (this.readyState !== 1) throw new Error('not open');
    const bytes = Buffer.byteLength(text);
    this.sent.push(text);
    if (bytes > this.server.maxMessageSize) { this.serverClose(1009, 'message too big'); return; }
    this.session.commands(text);
  }

  /** The server closes the connection with `code`. */
  serverClose(code, reason = '') {
    if (this.readyState > 1) return;
    queueMicrotask(() => this._closed(code, reason));
    this.readyState = 2;
  }

  _closed(code, reason) {
    this.readyState = 3;
    if (this.session) this.session.closed = true;
    if (this.onclose) this.onclose({code, reason});
  }

  close() { this.readyState = 3; if (this.session) this.session.closed = true; }
}

/**
 * An SSE stream opened by `POST /sse` (connect params as the JSON body): the
 * response body is a ReadableStream of `data:`/`id:` events. Listed in
 * `server.eventSources`; `serverEnd()` ends it from the server side.
 */
export class FakeSseStream {
  constructor(server, url, init) {
    this.server = server;
    this.url = url;
    this.headers = init.headers || {};
    this.params = JSON.parse(init.body || '{}');
    this.closed = false;
    this.eventId = 0;
    server.eventSources = server.eventSources || [];
    server.eventSources.push(this);
    this.body = new ReadableStream({start: c => { this.ctrl = c; }, cancel: () => this.close()});
    if (init.signal) init.signal.addEventListener('abort', () => this.close());
    this.session = new Session(server, 'sse', text => {
      if (this.closed) return;
      const id = server.sseResumeIds ? this._resumeId(JSON.parse(text)) : ++this.eventId;
      this.ctrl.enqueue(new TextEncoder().encode('data: ' + text + '\nid: ' + id + '\n\n'));
    });
    this.session.written = Object.create(null);  // channel -> {offset, epoch}: the last position written to the stream
    const last = this.headers['Last-Event-ID'];
    if (server.sseResumeIds && last) {
      // As the node does: the id's positions win over those of `subs`.
      const resumed = JSON.parse(Buffer.from(last, 'base64url').toString());
      this.params = {...this.params, subs: {...(this.params.subs || {}), ...resumed}};
    }
    const r = server.handle(this.session, {id: 1, connect: this.params});
    if (r) this.session.push(r);
  }

  response() { return {status: 200, ok: true, body: this.body, text: async () => { throw new Error('a stream'); }}; }

  // The node's resume id at this event: every subscription's position as far as the stream has written it.
  _resumeId(obj) {
    const w = this.session.written;
    if (obj.channel && obj.pub && typeof obj.pub.offset === 'number') w[obj.channel] = {offset: obj.pub.offset, epoch: this.server.channel(obj.channel).epoch};
    if (obj.result && obj.result.subs) {
      for (const [ch, r] of Object.entries(obj.result.subs)) if (typeof r.offset === 'number') w[ch] = {offset: r.offset, epoch: r.epoch};
    }
    const positions = {};
    for (const ch of this.session.subs) positions[ch] = w[ch] || {};
    return Buffer.from(JSON.stringify(positions)).toString('base64url');
  }

  serverEnd() {
    if (this.closed) return;
    this.close();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.session.closed = true;
    try { this.ctrl.close(); } catch (e) { /* already closed or cancelled */ }
  }
}

function response(status, body) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return {status, ok: status >= 200 && status < 300, text: async () => text, json: async () => JSON.parse(text)};
}

async function fakeFetch(server, url, init = {}) {
  if (server.fetchHook) {
    const r = await server.fetchHook(url, init);
    if (r) return r;
  }
  const u = new URL(url);
  const body = String(init.body || '');
  if (Buffer.byteLength(body) > server.maxMessageSize) return response(413, 'too large');
  if (u.pathname === '/sse' && !u.searchParams.has('session')) {
    if (server.refuseSse) throw new TypeError('network error');
    return new FakeSseStream(server, url, init).response();
  }
  if (u.pathname === '/sse') {
    const id = Number(String(u.searchParams.get('session')).slice(1));
    const s = server.sessions.find(x => x.id === id && !x.closed);
    if (!s) return response(404, 'no session');
    s.commands(body);
    return response(202, '');
  }
  if (u.pathname === '/rpc') {
    const s = new Session(server, 'rpc', () => {});
    const out = [];
    for (const line of body.split('\n')) {
      if (!line.trim()) continue;
      const cmd = JSON.parse(line);
      const r = server.handle(s, cmd);
      if (r) out.push(r);
    }
    s.closed = true;
    return response(200, out);
  }
  if (u.pathname === '/poll') {
    const req = JSON.parse(body);
    const items = [];
    for (const [name, since] of Object.entries(req.subs)) {
      const ch = server.channel(name);
      if (typeof since.offset !== 'number') { items.push({channel: name, position: {offset: ch.offset, epoch: ch.epoch}}); continue; }
      if (since.epoch !== ch.epoch) { items.push({channel: name, position: {offset: ch.offset, epoch: ch.epoch, recovered: false}}); continue; }
      for (const p of ch.pubs) if (p.offset > since.offset) items.push({channel: name, pub: p});
    }
    if (items.length || req.timeout === 0) return response(200, items);
    // Hold the poll until a publication in one of its channels, the timeout, or an abort.
    return new Promise((resolve, reject) => {
      server.pollWaiters = server.pollWaiters || [];
      const w = {channels: Object.keys(req.subs)};
      const done = () => { clearTimeout(t); server.pollWaiters = server.pollWaiters.filter(x => x !== w); };
      w.wake = () => { done(); resolve(fakeFetch(server, url, init)); };
      const t = setTimeout(() => { done(); resolve(response(200, [])); }, req.timeout * 1000);
      server.pollWaiters.push(w);
      if (init.signal) init.signal.addEventListener('abort', () => { done(); reject(new Error('aborted')); });
    });
  }
  return response(404, 'not found');
}

/** The commands (parsed) a fake WebSocket sent, flattened. */
export function sentCommands(ws) {
  const out = [];
  for (const text of ws.sent) for (const line of text.split('\n')) if (line.trim()) out.push(JSON.parse(line));
  return out;
}
