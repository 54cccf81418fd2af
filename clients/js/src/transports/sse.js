// The SSE transport: one connection attempt per instance (the client makes a
// new one for every attempt). See transports/index.js for what a transport
// offers the client and how it reports back.

import {errorFromBody} from '../errors.js';
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
