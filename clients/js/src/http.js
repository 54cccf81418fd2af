// HTTP: fetch with one deadline for the whole exchange (body included) and a
// cap on the answer's size; the SSE command POSTs and long-polling use it.

/**
 * fetch with one deadline for the whole exchange, body included (a stalled
 * body must not hang a connection), and a cap on the body's size.
 * Resolves `{status, text}`; rejects on network error, abort or deadline.
 */
export async function fetchText(env, url, init, ms, extraSignal, maxBytes = 16 << 20) {
  const ctrl = new env.AbortController();
  let timedOut = false;
  const timer = env.setTimeout(() => { timedOut = true; ctrl.abort(); }, ms);
  const onAbort = () => ctrl.abort();
  if (extraSignal) {
    if (extraSignal.aborted) ctrl.abort();
    else extraSignal.addEventListener('abort', onAbort);
  }
  // Every await below races the abort: a body read that ignores the signal cannot outlive the deadline.
  const aborted = new Promise((_, reject) => {
    if (ctrl.signal.aborted) reject(new Error('aborted'));
    else ctrl.signal.addEventListener('abort', () => reject(new Error('aborted')));
  });
  aborted.catch(() => {});
  const race = p => Promise.race([p, aborted]);
  try {
    const resp = await race(env.fetch(url, {...init, signal: ctrl.signal, cache: 'no-store', credentials: 'same-origin'}));
    let text;
    if (resp.body && typeof resp.body.getReader === 'function') {
      const reader = resp.body.getReader();
      const parts = [];
      let n = 0;
      const dec = new TextDecoder();
      for (;;) {
        const {done, value} = await race(reader.read());
        if (done) break;
        n += value.length;
        if (n > maxBytes) { try { reader.cancel(); } catch (e) { /* gone */ } throw new Error('answer larger than ' + maxBytes + ' bytes'); }
        parts.push(dec.decode(value, {stream: true}));
      }
      parts.push(dec.decode());
      text = parts.join('');
    } else {
      text = await race(resp.text());
      if (text.length > maxBytes) throw new Error('answer larger than ' + maxBytes + ' bytes');
    }
    return {status: resp.status, text};
  } catch (e) {
    if (timedOut) throw new Error('no complete answer within ' + ms + ' ms');
    throw e;
  } finally {
    env.clearTimeout(timer);
    if (extraSignal) extraSignal.removeEventListener('abort', onAbort);
  }
}
