// Subscription: one channel followed across reconnects, its position and
// the delivery of its publications (each once, in offset order).

import {SwitchboardError} from './errors.js';
import {Emitter} from './emitter.js';

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
    this._lpGap = null;      // long-polling after a hole: 'pending' (the next poll asks again from the position), 'polled'
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

  // Deliver one publication unless it was delivered before (offset <= last), or it comes after a hole
  // (offset > last + 1 in the same epoch): that one is not delivered either, and the client makes the
  // subscription again from the last position (`_onGap`), whose recovery brings the missing
  // publications and this one, in order. Returns true when delivered.
  _deliver(pub, epoch) {
    if (typeof pub.offset === 'number') {
      const pos = this._pos;
      if (pos && typeof pos.offset === 'number' && pub.offset <= pos.offset) {
        this._client._log('drop duplicate', this.channel, pub.offset, '<=', pos.offset);
        return false;
      }
      if (pos && typeof pos.offset === 'number' && pub.offset !== pos.offset + 1 && (epoch === undefined || epoch === pos.epoch)) {
        this._client._log('gap in', this.channel, 'after', pos.offset, 'got', pub.offset, ': not delivered, recovering');
        this._client._onGap(this, pub);
        return false;
      }
      this._pos = {offset: pub.offset, epoch: epoch !== undefined ? epoch : (this._pos ? this._pos.epoch : undefined)};
    }
    this._emit('publication', {channel: this.channel, offset: pub.offset, epoch: this._pos ? this._pos.epoch : undefined,
      data: pub.data, info: pub.info});
    return true;
  }
}
