// The long-polling transport: one connection attempt per instance (the client makes a
// new one for every attempt). See transports/index.js for what a transport
// offers the client and how it reports back.

import {errorFromBody, isTokenExpired} from '../errors.js';
import {fetchText} from '../http.js';
import {PostQueue} from '../queue.js';
import {CONNECT_ID, jsonOrNull} from '../util.js';

export class LongPollConn {
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
      if (this.polling) { this.restart = true; if (this.pollCtrl) this.pollCtrl.abort(); }
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
        this.restart = false;
        await this.client._pollTokens();  // subscription tokens, for channels that need them
        if (this.done) return;
        if (this.restart) continue;  // the channels changed meanwhile
        const {subs, probe} = this.client._pollSubs(this);
        if (this.done) return;
        if (Object.keys(subs).length === 0) return;  // nothing to follow: idle until subscribe()
        // A channel never positioned yet: poll with timeout 0, which answers at once with its position
        // (or nothing, when it keeps no history); then poll as usual.
        const timeout = probe.length ? 0 : Math.max(0, Math.min(60, Math.round(opts.pollTimeout / 1000)));
        const body = {subs, timeout, client: this.client._pollClient};
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
        this.client._pollMoved = false;
        for (const item of items) {
          if (this.done) return;
          if (item && typeof item === 'object') this.client._connMessage(this, item);
        }
        if (this.done) return;
        if (probe.length) { this.client._pollProbed(probe); continue; }
        if (!this.client._pollMoved && this.env.now() - started < 200 && !this.restart) {
          await this._sleep(500);  // never spin on a node that answers at once with nothing new
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
