// The WebSocket transport: one connection attempt per instance (the client makes a
// new one for every attempt). See transports/index.js for what a transport
// offers the client and how it reports back.

import {CONNECT_ID, parseLines} from '../util.js';
import {splitBatches} from '../queue.js';

export class WebSocketConn {
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
