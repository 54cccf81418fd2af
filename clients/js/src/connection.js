// ConnectionMachine: the connection lifecycle as a value. Pure: no timers,
// no env, no I/O, no listeners. client.js (the shell) tells it what happened
// and runs the action it returns (open a transport, set a timer, emit).
//
//   idle --connect()--> connecting --connected()--> connected
//   connecting/connected --connectionLost()--> waiting --reconnectDue()/online()/visible()/connect()--> connecting
//   connecting/connected --connectionLost() offline--> suspended (timer: maxReconnectDelay) --online()--> connecting
//   connecting/connected/waiting/suspended --suspend() (offline, pagehide)--> suspended --online()--> connecting
//   connected --climbBack() (WebSocket works again)--> connecting
//   connecting/connected --connectionLost() terminal code / reconnect: false--> closed
//   any but destroyed --close()--> closed --connect()--> connecting
//   any --destroy()--> destroyed (connect() refused)
//
// The public state is a projection: idle, waiting and suspended are all
// 'disconnected'; destroyed is 'closed'. `epoch` goes up with every
// transition: the shell reads it before running listeners and compares
// after, so that close()/destroy()/connect() from inside a listener win
// over what the transition was about to do next.

import {isTerminal} from './errors.js';
import {Backoff} from './backoff.js';
import {TransportLadder} from './ladder.js';

const PUBLIC_STATES = {
  idle: 'disconnected', waiting: 'disconnected', suspended: 'disconnected',
  connecting: 'connecting', connected: 'connected', closed: 'closed', destroyed: 'closed',
};

/**
 * @typedef {Object} ConnectionAction  what the shell does next; every field optional ({} is "nothing")
 * @property {string} [startAttempt]     open this transport now (the machine is `connecting`)
 * @property {number} [scheduleReconnect]  ms until reconnectDue() (the machine is `waiting` or `suspended`)
 * @property {{code: number, reason: string}} [terminal]  the connection ended for good (the machine is `closed`)
 * @property {string} [close]            close() or destroy(): end everything (the reason)
 * @property {string} [suspend]          offline or pagehide: end the connection, wait for online (the reason)
 * @property {boolean} [emitState]       the public state changed: emit `state`
 * @property {boolean} [disconnected]    (close) emit `disconnected`: the client was not closed already
 * @property {boolean} [destroy]         (close) the client is destroyed
 * @property {?number} [probeAfter]      (connected) ms until a probe for WebSocket, null: none
 * @property {boolean} [checkQuiet]      (visible while connected) check that the connection is not quiet
 * @property {string} [error]            the call is refused ('destroyed')
 * @property {number} [code]             (scheduleReconnect) close code, for `disconnected`
 * @property {string} [reason]           (scheduleReconnect) reason, for `disconnected`
 * @property {?string} [fellBackTo]      (scheduleReconnect) the ladder moved to this transport
 */

/**
 * The lifecycle of a Switchboard client: its state (a value that carries its
 * data), the transport ladder and the reconnect backoff. Methods are events;
 * each returns a {@link ConnectionAction}.
 */
export class ConnectionMachine {
  /**
   * @param {{transports: string[], minReconnectDelay: number, maxReconnectDelay: number, upgradeInterval: number,
   *   renewableToken?: boolean, random?: () => number}} o  renewableToken: getToken() can replace an expired token
   */
  constructor(o) {
    this.ladder = new TransportLadder(o.transports);
    this.random = o.random || Math.random;
    this.backoff = new Backoff(o.minReconnectDelay, o.maxReconnectDelay, this.random, true);
    this.minReconnectDelay = o.minReconnectDelay;
    this.maxReconnectDelay = o.maxReconnectDelay;
    this.upgradeInterval = o.upgradeInterval;
    this.renewableToken = !!o.renewableToken;
    /** The state and its data: {name: 'idle'|'connecting'|'connected'|'waiting'|'suspended'|'closed'|'destroyed', ...}. */
    this.phase = {name: 'idle'};
    /** Bumped by every transition. */
    this.epoch = 0;
  }

  /** The public state: 'disconnected' | 'connecting' | 'connected' | 'closed'. */
  get state() { return PUBLIC_STATES[this.phase.name]; }

  /** connect() was called and no close() since: the client wants a connection. */
  get active() {
    const n = this.phase.name;
    return n === 'connecting' || n === 'connected' || n === 'waiting' || n === 'suspended';
  }

  get destroyed() { return this.phase.name === 'destroyed'; }

  /** The transport in use or to try next. */
  get transport() { return this.ladder.current; }

  _go(phase) {
    const before = this.state;
    this.phase = phase;
    this.epoch++;
    return this.state !== before;
  }

  _start() {
    const transport = this.ladder.current;
    const emitState = this._go({name: 'connecting', transport});
    return {startAttempt: transport, emitState};
  }

  /** connect(): start, or reconnect at once from a backoff; nothing while connecting or connected. */
  connect() {
    switch (this.phase.name) {
      case 'destroyed': return {error: 'destroyed'};
      case 'connecting': case 'connected': return {};
      case 'waiting': case 'suspended': return this._start();
      default:  // idle, closed: a fresh start
        this.backoff.reset();
        this.ladder.restart();
        return this._start();
    }
  }

  /** The reconnect timer fired. */
  reconnectDue() {
    const n = this.phase.name;
    return n === 'waiting' || n === 'suspended' ? this._start() : {};
  }

  /** getToken() gave a token while connecting: open the transport now (the state stays `connecting`). */
  tokenArrived() {
    return this.phase.name === 'connecting' ? this._start() : {};
  }

  /** The browser is online again (or the page came back from the back/forward cache): reconnect at once. */
  online() { return this.reconnectDue(); }

  /** The page became visible: cut a backoff short (not while suspended); when connected, check for a quiet connection. */
  visible() {
    if (this.phase.name === 'waiting') return this._start();
    if (this.phase.name === 'connected') return {checkQuiet: true};
    return {};
  }

  /** Offline or pagehide into the back/forward cache: end the connection, do not count a failure, wait for online(). */
  suspend(reason) {
    if (!this.active) return {};
    const emitState = this._go({name: 'suspended', reason, delayMs: null});
    return {suspend: reason, emitState};
  }

  /** close(): stop; a later connect() starts afresh. */
  close(reason) {
    if (this.destroyed) return {};
    const was = this.state;
    const emitState = this._go({name: 'closed', code: 0, reason});
    return {close: reason, emitState, disconnected: was !== 'closed'};
  }

  /** destroy(): close() for good. */
  destroy() {
    if (this.destroyed) return {};
    const was = this.state;
    const emitState = this._go({name: 'destroyed'});
    return {close: 'destroyed', emitState, disconnected: was !== 'closed', destroy: true};
  }

  /** A connect reply over `transport`. */
  connected(transport) {
    if (this.phase.name !== 'connecting') return {};
    this.ladder.connected(transport);
    const emitState = this._go({name: 'connected', transport});
    return {emitState, probeAfter: this.nextProbe(transport)};
  }

  /** The connection has lived a while: the backoff starts over. */
  stable() {
    if (this.phase.name === 'connected') this.backoff.reset();
  }

  /** ms until the next probe for WebSocket while connected over `transport` (±25 % of upgradeInterval), or null. */
  nextProbe(transport) {
    if (this.phase.name !== 'connected' || !this.upgradeInterval || !this.ladder.canClimbBack(transport)) return null;
    return this.upgradeInterval * (0.75 + this.random() / 2);
  }

  /** A probe opened a WebSocket: move back to it. */
  climbBack() {
    if (this.phase.name !== 'connected') return {};
    this.ladder.climbBack();
    return this._start();
  }

  /**
   * An attempt or a connection ended (or getToken() failed: transport null). Decides between
   * closed (terminal code, `reconnect: false`) and a reconnect after a delay, on this transport or the next.
   * @param {{transport: ?string, opened?: boolean, wasConnected?: boolean, code?: number, reason?: string,
   *   serverReconnect?: boolean, online?: boolean}} end
   */
  connectionLost({transport = null, opened = false, wasConnected = false, code = 0, reason = '', serverReconnect, online = true}) {
    if (this.phase.name !== 'connecting' && this.phase.name !== 'connected') return {};
    code = typeof code === 'number' ? code : 0;
    // No reconnect for 3500-3999 (and 1002/1007), nor when a `disconnect` push says `reconnect: false`;
    // but 3503 with getToken() always reconnects: the node says `reconnect: false` because the same
    // token would be refused, and getToken() gives a new one.
    const renewable = code === 3503 && this.renewableToken;
    if (!renewable && (isTerminal(code) || serverReconnect === false)) {
      const emitState = this._go({name: 'closed', code, reason});
      return {terminal: {code, reason}, emitState};
    }
    const {switched, wrapped} = this.ladder.ended({transport, opened, wasConnected, online});
    let delay;
    if (switched && !wrapped) {
      delay = 0;  // try the next transport at once
    } else {
      const floor = code === 3001 || code === 3002 ? 4 * this.minReconnectDelay : 0;
      delay = this.backoff.next(floor);
    }
    let emitState;
    if (online) {
      emitState = this._go({name: 'waiting', delayMs: delay, code, reason});
    } else {
      // Offline: at online(), or after the longest backoff should that event never come.
      delay = this.maxReconnectDelay;
      emitState = this._go({name: 'suspended', reason, delayMs: delay});
    }
    return {scheduleReconnect: delay, code, reason, emitState, fellBackTo: switched ? this.ladder.current : null};
  }
}
