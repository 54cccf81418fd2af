// Backoff: exponential delays with jitter, for reconnects (full jitter) and
// subscribe retries (equal jitter).

/**
 * Exponential backoff: attempt n waits up to min(max, min * 2^n).
 * `full` jitter draws from [0, cap); otherwise [cap/2, cap) (never a tight loop).
 */
export class Backoff {
  constructor(minMs, maxMs, random, full = true) {
    this.min = minMs; this.max = maxMs; this.random = random || Math.random; this.full = full;
    this.attempt = 0;
  }

  /** The next delay in ms; `floorCap` raises the cap (drain, rebalance). */
  next(floorCap = 0) {
    let cap = Math.min(this.max, this.min * Math.pow(2, this.attempt));
    if (floorCap) cap = Math.max(cap, Math.min(this.max, floorCap));
    this.attempt = Math.min(this.attempt + 1, 30);
    const r = this.random();
    return this.full ? r * cap : cap / 2 + r * cap / 2;
  }

  reset() { this.attempt = 0; }
}
