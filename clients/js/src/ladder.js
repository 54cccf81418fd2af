// TransportLadder: which transport the next connection attempt uses. Pure:
// no timers, no I/O. The client falls back to the next transport when one
// cannot open (and never worked) or fails twice running, and climbs back to
// the first (WebSocket) when a probe shows it works again.

/**
 * The transports in order of preference and the position on them.
 * Failures are counted only for attempts that never got a connect reply
 * while the browser was online: offline, every transport fails and none is
 * to blame.
 */
export class TransportLadder {
  /** @param {string[]} transports  in order of preference, at least one */
  constructor(transports) {
    this.transports = transports.slice();
    this.index = 0;               // transport in use / being tried
    this.failuresInRow = 0;       // attempts on it that never got a connect reply
    this.worked = new Set();      // transports that got a connect reply at least once
  }

  /** The transport in use or to try next. */
  get current() { return this.transports[this.index]; }

  /** connect() after close(): the failures counted so far no longer count (the position stays). */
  restart() { this.failuresInRow = 0; }

  /** A connect reply came over `transport`: it works. */
  connected(transport) {
    this.failuresInRow = 0;
    this.worked.add(transport);
  }

  /**
   * An attempt or a connection ended. `transport` is null when no transport was tried (getToken failed).
   * Returns whether the ladder moved to the next transport (`switched`) and whether that wrapped around
   * to the first one (`wrapped`: then the client waits for the backoff instead of trying at once).
   * @param {{transport: ?string, opened: boolean, wasConnected: boolean, online: boolean}} end
   * @returns {{switched: boolean, wrapped: boolean}}
   */
  ended({transport, opened, wasConnected, online}) {
    if (!transport || wasConnected || !online) {
      this.failuresInRow = 0;
      return {switched: false, wrapped: false};
    }
    this.failuresInRow++;
    const n = this.transports.length;
    if (n > 1 && ((!opened && !this.worked.has(transport)) || this.failuresInRow >= 2)) {
      this.index = (this.index + 1) % n;
      this.failuresInRow = 0;
      return {switched: true, wrapped: this.index === 0};
    }
    return {switched: false, wrapped: false};
  }

  /** Whether a client connected over `transport` should probe to climb back to WebSocket. */
  canClimbBack(transport) {
    return this.index !== 0 && transport !== this.transports[0] && this.transports[0] === 'websocket';
  }

  /** The probe opened: the next attempt uses the first transport. */
  climbBack() {
    this.index = 0;
    this.failuresInRow = 0;
  }
}
