import { PING_BODY_BYTES } from './protocol';

/** Unanswered PINGs remembered. */
const MAX_OUTSTANDING = 4;

/** What Liveness asks of its session. */
export interface LivenessHooks {
  sendPing(body: Buffer): void;
  /** Nothing was received for more than 2 intervals. */
  dead(): void;
  rtt(ms: number): void;
}

/**
 * PING every interval, carrying the send time; the PONG (sealed, so no middlebox can answer
 * it) gives the round-trip time. A peer silent for more than 2 intervals is declared dead at
 * the next tick: found within 3 intervals of its last frame (docs/PROTOCOL.md, "Liveness").
 */
export class Liveness {
  private readonly timer: NodeJS.Timeout;
  private readonly first: NodeJS.Immediate;
  private lastReceived = performance.now();
  private rtt?: number;
  private minRtt?: number;
  /** Send times of our PINGs not answered yet, oldest first. */
  private readonly outstanding = new Set<number>();

  constructor(
    private readonly intervalMs: number,
    private readonly hooks: LivenessHooks,
  ) {
    this.timer = setInterval(() => this.tick(), intervalMs);
    this.timer.unref();
    // One PING as the session starts (the protocol lets either side send frames right after
    // the handshake), so the round trip that sizes windows over a long link is known at once,
    // not one interval later.
    this.first = setImmediate(() => this.ping());
  }

  /** Last measured round-trip time (ms). */
  get rttMs(): number | undefined {
    return this.rtt;
  }

  /** Shortest measured round-trip time (ms): the path's own, without queues (window sizing). */
  get baseRttMs(): number | undefined {
    return this.minRtt;
  }

  /** Any authenticated frame arrived. */
  received(): void {
    this.lastReceived = performance.now();
  }

  /**
   * A PONG arrived. Only the answer to a PING of ours that is still outstanding counts: the
   * peer sees our clock in every PING, and a PONG body of its own making would set the round
   * trip (and so the windows' growth past their caps) to whatever it chose.
   */
  pong(body: Buffer): void {
    const sentAt = body.readDoubleBE(0);
    if (!this.outstanding.delete(sentAt)) return;
    const rtt = performance.now() - sentAt;
    if (rtt < 0 || !Number.isFinite(rtt)) return;
    this.rtt = rtt;
    if (this.minRtt === undefined || rtt < this.minRtt) this.minRtt = rtt;
    this.hooks.rtt(rtt);
  }

  stop(): void {
    clearInterval(this.timer);
    clearImmediate(this.first);
  }

  private tick(): void {
    if (performance.now() - this.lastReceived > 2 * this.intervalMs) return this.hooks.dead();
    this.ping();
  }

  private ping(): void {
    const sentAt = performance.now();
    const body = Buffer.allocUnsafe(PING_BODY_BYTES);
    body.writeDoubleBE(sentAt, 0);
    // At most a few unanswered at once (a dead peer is found within 3 intervals).
    if (this.outstanding.size >= MAX_OUTSTANDING) {
      this.outstanding.delete(this.outstanding.values().next().value!);
    }
    this.outstanding.add(sentAt);
    this.hooks.sendPing(body);
  }
}
