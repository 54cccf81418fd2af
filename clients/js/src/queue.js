// The request queue: commands waiting for their replies (ids, deadlines,
// resent on the next connection), and the cap on what goes in one body or
// frame (`maxMessageSize`): splitBatches and PostQueue.

import {SwitchboardError, toError} from './errors.js';
import {byteLength} from './util.js';

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
 * The commands waiting for their replies, by id. Each has one deadline
 * (`timeoutMs`, reconnects included) and remembers the connection it was
 * sent on: when that connection dies, a request waits for the next one and
 * is sent again (a publish carries an idempotency key, so it lands once),
 * while a connection-scoped command (subscribe, unsubscribe, refresh) fails
 * with it. A command larger than `maxBytes` is refused before it is queued.
 */
export class RequestQueue {
  /**
   * @param {{setTimeout: Function, clearTimeout: Function}} env
   * @param {{maxBytes: number, timeoutMs: number, firstId: number}} opts
   */
  constructor(env, opts) {
    this.env = env;
    this.maxBytes = opts.maxBytes;
    this.timeoutMs = opts.timeoutMs;
    this.nextId = opts.firstId;
    this.pending = new Map();   // id -> {cmd, resolve, reject, timer, connScoped, sentOn}
  }

  /** How many commands wait for a reply. */
  get size() { return this.pending.size; }

  /**
   * Queue `{id, [method]: params}` and send it on `conn` at once when one is
   * given (a connected connection; else it waits for sendUnsent). Resolves
   * with the reply's result; rejects with the reply's error, `'timeout'`,
   * `'too_large'` or `'bad_request'` (params that are not JSON).
   */
  add(method, params, connScoped, conn) {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      const cmd = {id, [method]: params};
      let size;
      try { size = byteLength(JSON.stringify(cmd)); } catch (e) {
        reject(new SwitchboardError('bad_request', method + ': params are not JSON: ' + e.message));
        return;
      }
      if (size > this.maxBytes) {
        reject(new SwitchboardError('too_large', method + ' of ' + size + ' bytes is over the limit of ' + this.maxBytes + ' bytes'));
        return;
      }
      const p = {cmd, resolve, reject, connScoped, sentOn: null, timer: null};
      p.timer = this.env.setTimeout(() => {
        if (this.pending.get(id) === p) {
          this.pending.delete(id);
          reject(new SwitchboardError('timeout', method + ': no reply within ' + this.timeoutMs + ' ms', true));
        }
      }, this.timeoutMs);
      this.pending.set(id, p);
      if (conn) { p.sentOn = conn; conn.send([cmd]); }
    });
  }

  /** A reply (`{id, result}` or `{id, error}`): settles its command. False when no command waits for that id. */
  reply(msg) {
    const p = this.pending.get(msg.id);
    if (!p) return false;
    this.pending.delete(msg.id);
    this._clear(p.timer);
    if (msg.error) p.reject(toError(msg.error));
    else p.resolve(msg.result !== undefined ? msg.result : {});
    return true;
  }

  /** Reject these commands (an HTTP answer with no replies for them). */
  reject(cmds, err) {
    for (const c of cmds) {
      const p = this.pending.get(c.id);
      if (!p) continue;
      this.pending.delete(c.id);
      this._clear(p.timer);
      p.reject(toError(err));
    }
  }

  /** Reject every command (close, a final disconnect). */
  rejectAll(err) {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) { this._clear(p.timer); p.reject(err); }
  }

  /** `conn` died: its connection-scoped commands fail, its requests wait for the next connection. */
  connectionLost(conn) {
    for (const [id, p] of [...this.pending]) {
      if (p.sentOn !== conn) continue;
      if (p.connScoped) {
        this.pending.delete(id);
        this._clear(p.timer);
        p.reject(new SwitchboardError('closed', 'connection closed'));
      } else {
        p.sentOn = null;
      }
    }
  }

  /** `conn` was left on purpose (moving to another transport): what was sent on it is sent again on the next one. */
  detach(conn) {
    for (const p of this.pending.values()) if (p.sentOn === conn) p.sentOn = null;
  }

  /** No connection for a while (offline, page cached): every connection-scoped command fails, requests wait. */
  suspend(reason) {
    for (const [id, p] of [...this.pending]) {
      if (p.connScoped) { this.pending.delete(id); this._clear(p.timer); p.reject(new SwitchboardError('closed', reason)); }
      else p.sentOn = null;
    }
  }

  /** Send on `conn` every command not sent on it yet (requests made while disconnected, or in flight when a connection died). */
  sendUnsent(conn) {
    const cmds = [];
    for (const p of this.pending.values()) {
      if (p.sentOn !== conn) { p.sentOn = conn; cmds.push(p.cmd); }
    }
    if (cmds.length) conn.send(cmds);
  }

  _clear(t) { if (t !== null && t !== undefined) this.env.clearTimeout(t); }
}
