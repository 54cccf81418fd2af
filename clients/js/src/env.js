// Environment: everything the client takes from the browser (WebSocket,
// fetch, ReadableStream, timers, window/document/navigator events), injectable
// through `options.env` so that the unit tests pass fakes.

/**
 * @typedef {Object} SwitchboardEnv
 * @property {Function} [WebSocket]
 * @property {Function} [ReadableStream]   the SSE transport reads fetch's body as a stream
 * @property {Function} [fetch]
 * @property {Function} [AbortController]
 * @property {(fn: Function, ms: number) => *} [setTimeout]
 * @property {(t: *) => void} [clearTimeout]
 * @property {() => number} [now]
 * @property {() => number} [random]
 * @property {EventTarget|null} [window]    `online`, `offline`, `pageshow`, `pagehide` come from here
 * @property {Object|null} [document]       `visibilitychange` and `visibilityState`
 * @property {{onLine?: boolean}|null} [navigator]
 */

/** The browser's objects, overridden by `over` (tests pass fakes). */
export function makeEnv(over) {
  const g = globalThis;
  const env = {
    WebSocket: g.WebSocket,
    ReadableStream: g.ReadableStream,
    fetch: typeof g.fetch === 'function' ? (...a) => g.fetch(...a) : undefined,
    AbortController: g.AbortController,
    setTimeout: (fn, ms) => g.setTimeout(fn, ms),
    clearTimeout: t => g.clearTimeout(t),
    now: () => Date.now(),
    random: () => Math.random(),
    window: typeof g.addEventListener === 'function' ? g : null,
    document: g.document || null,
    navigator: g.navigator || null,
  };
  return Object.assign(env, over || {});
}
