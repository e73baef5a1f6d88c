import { PING_BODY_BYTES } from './protocol';

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

  /** A PONG arrived with the body of one of our PINGs. */
  pong(body: Buffer): void {
    const rtt = performance.now() - body.readDoubleBE(0);
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
    const body = Buffer.allocUnsafe(PING_BODY_BYTES);
    body.writeDoubleBE(performance.now(), 0);
    this.hooks.sendPing(body);
  }
}
