// The SSE transport: one connection attempt per instance (the client makes a
// new one for every attempt). See transports/index.js for what a transport
// offers the client and how it reports back.
//
// The stream is opened with `fetch(POST /sse)`, the connect params (token
// included) as the JSON body, and read from the response's ReadableStream
// (EventStreamParser): a token never goes into a URL, where proxies and
// access logs would keep it. EventSource can only GET, so it is not used.
// The id of the last event seen is kept on the client and sent back as
// `Last-Event-ID` by the next attempt only when it holds exactly the
// positions the client resumes from (`_resumeId`): never ahead of what the
// app was given.

import {errorFromBody} from '../errors.js';
import {EventStreamParser, resumeIdPositions} from '../eventstream.js';
import {fetchText} from '../http.js';
import {PostQueue} from '../queue.js';
import {CONNECT_ID, parseLines} from '../util.js';

export class SseConn {
  constructor(client, params) {
    this.name = 'sse';
    this.client = client;
    this.env = client._env;
    this.params = params;
    this.opened = false;
    this.connected = false;
    this.done = false;
    this.session = null;
    this.abort = null;
    this.reader = null;
    this.lastEventId = null;  // the Last-Event-ID this attempt sent (null: none)
    this.posts = new PostQueue((batch, text) => this._post(batch, text), client._opts.maxMessageSize);
  }

  open() {
    const headers = {'Content-Type': 'application/json', 'Accept': 'text/event-stream'};
    const last = this._resumeId();
    if (last) { headers['Last-Event-ID'] = last; this.lastEventId = last; }
    let started;
    try {
      this.abort = new this.env.AbortController();
      started = this.env.fetch(this.client._urls.sse, {method: 'POST', headers, body: JSON.stringify(this.params),
        signal: this.abort.signal, cache: 'no-store', credentials: 'same-origin'});
    } catch (e) {
      started = Promise.reject(e);
    }
    Promise.resolve(started).then(resp => this._read(resp), e => this._end(0, 'cannot open: ' + e));
  }

  // The last event id the client saw, only when every channel it names is one this attempt
  // subscribes from exactly the position the id holds (same offset, same epoch). The id is the
  // node's view of the stream: it counts what the node wrote, not what the client delivered, and
  // the node takes its positions over those of `subs`. So an id that names a channel unsubscribed
  // meanwhile (or one that subscribes with its own token) would subscribe what the client no longer
  // wants; one from another epoch (a stream reset), or ahead of the client's position (a
  // publication written but not delivered: held before a subscribe reply when the stream was cut,
  // or past a hole), would resume past publications the app never got, a hole; one behind it would
  // recover again what the app has (and could say `recovered: false` for what it does not miss).
  // Nothing is lost by leaving it out: `subs` always carries the client's own positions, which the
  // protocol's recovery is made of (the id's format is the node's, not composed here).
  _resumeId() {
    const id = this.client._sseLastEventId;
    const subs = this.params.subs || {};
    const positions = resumeIdPositions(id);
    if (!positions || !Object.keys(positions).length) return null;
    for (const [ch, pos] of Object.entries(positions)) {
      const mine = Object.prototype.hasOwnProperty.call(subs, ch) ? subs[ch] : undefined;
      if (!mine || typeof mine.offset !== 'number' || !pos || pos.epoch !== mine.epoch || pos.offset !== mine.offset) return null;
    }
    return id;
  }

  async _read(resp) {
    if (this.done) { this._cancel(resp); return; }
    if (resp.status !== 200 || !resp.body || typeof resp.body.getReader !== 'function') {
      let detail = '';
      try { detail = ' ' + (await this._head(resp)).slice(0, 200).trim(); } catch (e) { /* no body */ }
      this._cancel(resp);
      this._end(0, 'cannot open: HTTP ' + resp.status + detail);
      return;
    }
    const reader = resp.body.getReader();
    this.reader = reader;
    const parser = new EventStreamParser(ev => this._event(ev));
    try {
      for (;;) {
        const {done, value} = await reader.read();
        if (this.done) return;
        if (done) { parser.end(); break; }
        parser.push(value);
        if (this.done) return;
      }
    } catch (e) {
      if (this.done) return;
      this._end(0, this.opened ? 'stream ended: ' + e : 'cannot open: ' + e);
      return;
    }
    this._end(0, this.opened ? 'stream ended' : 'cannot open');
  }

  _event(ev) {
    if (this.done) return;
    this.opened = true;
    this.client._sseLastEventId = ev.id || null;  // an empty id (one too long to send back) resets it
    for (const obj of parseLines(ev.data, [])) {
      if (this.done) return;
      if (obj.id === CONNECT_ID && obj.result && obj.result.session) this.session = obj.result.session;
      this.client._connMessage(this, obj);
    }
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

  // The first few KB of a refusal's body, for the reason: a body that never ends must not fill memory.
  async _head(resp) {
    if (!resp.body || typeof resp.body.getReader !== 'function') return String(await resp.text());
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let text = '';
    while (text.length < 4096) {
      const {done, value} = await reader.read();
      if (done) break;
      text += dec.decode(value, {stream: true});
    }
    try { reader.cancel().catch(() => {}); } catch (e) { /* gone */ }
    return text;
  }

  _cancel(resp) {
    try { if (resp && resp.body && typeof resp.body.cancel === 'function') resp.body.cancel().catch(() => {}); } catch (e) { /* gone */ }
  }

  _end(code, reason) {
    if (this.done) return;
    this.done = true;
    this._closeStream();
    this.client._connClosed(this, code, reason);
  }

  _closeStream() {
    this.posts.stop();
    const reader = this.reader;
    this.reader = null;
    if (reader) { try { reader.cancel().catch(() => {}); } catch (e) { /* closed */ } }
    const abort = this.abort;
    this.abort = null;
    if (abort) { try { abort.abort(); } catch (e) { /* done */ } }
  }

  close() { this.done = true; this._closeStream(); }
}
