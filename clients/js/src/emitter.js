// A tiny event emitter, the base of Switchboard and Subscription.

export class Emitter {
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
