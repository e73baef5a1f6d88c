/** Reconnect delays. */
export interface BackoffOptions {
  /** First delay (ms). Default 500. */
  initialMs: number;
  /** Largest delay (ms). Default 30 000. */
  maxMs: number;
  /** A session that stayed up this long resets the delay (ms). Default 10 000. */
  stableMs: number;
}

/**
 * Capped exponential backoff with "equal jitter" (half fixed, half random): dialers that lost
 * the same listener do not come back in lockstep, and a delay is never zero. The delay resets
 * only after a stable session, so a peer that accepts then drops at once is not hammered.
 */
export class Backoff {
  private readonly opts: BackoffOptions;
  private attempt = 0;

  constructor(
    opts: Partial<BackoffOptions> = {},
    private readonly random = Math.random,
  ) {
    this.opts = { initialMs: 500, maxMs: 30_000, stableMs: 10_000, ...opts };
  }

  /** The delay before the next attempt; each call doubles the base up to the cap. */
  next(): number {
    const base = Math.min(this.opts.maxMs, this.opts.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return base / 2 + (this.random() * base) / 2;
  }

  /** Reports how long the last session lasted. */
  sessionEnded(upMs: number): void {
    if (upMs >= this.opts.stableMs) this.attempt = 0;
  }
}
