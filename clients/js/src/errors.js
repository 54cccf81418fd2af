// Errors: SwitchboardError, the codes after which the client stops, and how
// error answers (a reply's `error`, an HTTP body) become SwitchboardErrors.

/**
 * An error from the server (a reply's `error`) or from the client itself.
 * Server errors carry the protocol's numeric `code` (101 unauthorized, 103
 * permission denied, ...). Client-side failures use string codes:
 * `'timeout'` (no reply within `requestTimeout`), `'closed'` (close() was
 * called, or the server ended the connection for good), `'bad_request'`
 * (refused by the client before sending), `'too_large'` (a command larger
 * than `maxMessageSize`, refused before sending), `'transport'` (an HTTP
 * answer the protocol has no reply for, e.g. 413), `'destroyed'`.
 */
export class SwitchboardError extends Error {
  /**
   * @param {number|string} code
   * @param {string} message
   * @param {boolean} [temporary]
   */
  constructor(code, message, temporary = false) {
    super(message || String(code));
    this.name = 'SwitchboardError';
    /** @type {number|string} */
    this.code = code;
    /** @type {boolean} */
    this.temporary = !!temporary;
  }
}

export function toError(e) {
  if (e instanceof SwitchboardError) return e;
  if (e && typeof e === 'object' && 'code' in e) {
    // From the network: only a number or a string is taken as code or message (an object there
    // could throw while being turned into a string, inside the client's own handlers).
    const code = typeof e.code === 'number' || typeof e.code === 'string' ? e.code : 'protocol';
    const message = typeof e.message === 'string' ? e.message : typeof e.message === 'number' ? String(e.message) : '';
    return new SwitchboardError(code, message, e.temporary === true);
  }
  if (e instanceof Error) return new SwitchboardError('transport', e.message);
  return new SwitchboardError('transport', typeof e === 'string' ? e : 'unknown error');
}

/**
 * The delay before a refresh of a token whose `ttl` (seconds, from the node) is left: four fifths
 * of it, at least 1 s, and never past what a timer can hold (2^31 - 1 ms: a longer delay fires at
 * once in browsers and Node, which would make a refresh loop). Null when `ttl` is not a number.
 */
export function refreshDelay(ttl) {
  if (typeof ttl !== 'number' || Number.isNaN(ttl)) return null;
  return Math.min(Math.max(1000, ttl * 800), 2147483647);
}

/**
 * Codes after which the client does not reconnect on its own: protocol
 * 3500-3999 and the RFC 6455 client bugs 1002/1007. Not 1009 (message too
 * big): the client refuses oversize commands itself, so a 1009 means a
 * smaller limit on the node, and reconnecting is right.
 */
export function isTerminal(code) {
  return (code >= 3500 && code <= 3999) || code === 1007 || code === 1002;
}

// A 401 from /poll or /rpc for an expired token: error 109, or 101 "token expired" (what nodes up
// to 0.1 answer over HTTP), so that getToken() is asked for a new one instead of the client stopping.
export function isTokenExpired(err) {
  return err.code === 109 || (err.code === 101 && /token expired/i.test(String(err.message)));
}

/** The error in an HTTP answer's JSON body (`{"error": {...}}`), else one made from its status. */
export function errorFromBody(text, status, fallbackCode) {
  try {
    const doc = JSON.parse(text);
    if (doc && doc.error) return toError(doc.error);
  } catch (e) { /* not JSON */ }
  return new SwitchboardError(fallbackCode, 'HTTP ' + status, fallbackCode === 'transport');
}
