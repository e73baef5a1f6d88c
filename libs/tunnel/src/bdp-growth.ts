import { BDP_GROWTH_SHARE, BDP_STREAM_WINDOW, BDP_TRIAL_GAIN } from './protocol';

/** Round trips one measurement spans: credit comes in quarter windows, so one is too coarse. */
const MEASURE_RTTS = 4;
/** Round trips without a grant after which the stream counts as stalled. */
const STALL_RTTS = 2;
/** Round trips to wait after a doubling that did not pay before the next trial; doubling to the max. */
const RETRY_RTTS = 16;
const MAX_RETRY_RTTS = 1024;

/**
 * Whether a stream's receive window, already at its cap (MAX_STREAM_WINDOW, or
 * LONE_STREAM_WINDOW alone), should double again: across a long link the window, not the CPU,
 * decides a stream's speed (one window per round trip), and the window a stream needs is the
 * link's bandwidth-delay product, which the receiver cannot know in advance.
 *
 * It measures what the reader consumes per base round trip (the session's shortest PING/PONG),
 * from the credit the stream grants, over MEASURE_RTTS round trips at a time. A measurement in
 * which the stream stalled (no grant for STALL_RTTS round trips: a paused reader, a sender with
 * nothing to send) is dropped; one with bytes left unread at some grant is not (a reader that
 * pipes to a socket has some at most grants: no measurement would ever end).
 *
 * A doubling is tried only while a round trip carries at least BDP_GROWTH_SHARE of the window,
 * and it is a trial: a measurement started a round trip after it (when the new credit has had
 * time to bring bytes) must carry BDP_TRIAL_GAIN times what the one before it did. Else it is
 * undone, and the next trial waits RETRY_RTTS round trips, twice as long after each failure: a
 * window at the BDP queues a second one briefly and ever more rarely, and a trial spoiled by a
 * busy CPU costs a little time, not the stream's speed. A window past the BDP would only queue
 * the stream's bytes in the link ahead of every other stream's (a small request behind a
 * download), and buys nothing. Without a measured round trip, nothing grows.
 */
export class BdpGrowth {
  /** Where the current measurement started: time (ms) and bytes credited by then. */
  private sample?: { at: number; credited: number };
  /** The previous grant (ms). */
  private last = 0;
  /** Bytes consumed per round trip, by the last finished measurement. */
  private perRtt = 0;
  private trial?: { at: number; before: number; from: number };
  /**
   * After a doubling that did not pay: no trial before this time (ms), and the round trips to
   * wait after the next one that does not pay either.
   */
  private retryAt = 0;
  private backoffRtts = RETRY_RTTS;

  /**
   * Called at each credit grant with the time, the bytes credited in all, the base round trip.
   * Returns the window to go back to when the last doubling did not pay, else undefined.
   */
  observe(now: number, credited: number, rttMs: number | undefined): number | undefined {
    if (!rttMs) return undefined;
    const gap = now - this.last;
    this.last = now;
    // Two round trips without a grant: the stream stalled (a paused reader, a sender with
    // nothing to send), and what it carried meanwhile says nothing about the window.
    // A trial is judged from a round trip after its doubling on (the new credit has reached the
    // sender and its bytes have come back): what came before that is not measured.
    const settling = this.trial !== undefined && now < this.trial.at + rttMs;
    if (!this.sample || settling || gap > STALL_RTTS * rttMs) {
      this.sample = { at: now, credited };
      return undefined;
    }
    const elapsed = now - this.sample.at;
    if (elapsed < MEASURE_RTTS * rttMs) return undefined;
    this.perRtt = ((credited - this.sample.credited) * rttMs) / elapsed;
    this.sample = { at: now, credited };
    if (!this.trial) return undefined;
    const { before, from } = this.trial;
    this.trial = undefined;
    if (this.perRtt >= before * BDP_TRIAL_GAIN) {
      this.backoffRtts = RETRY_RTTS;
      return undefined;
    }
    // Not paid (or a measurement spoiled by a busy CPU): back, and a new trial only after a
    // wait that doubles with each failure, so a window at the BDP queues a second one briefly
    // and more and more rarely, while a spurious failure costs a little time, not the stream.
    this.retryAt = now + this.backoffRtts * rttMs;
    this.backoffRtts = Math.min(this.backoffRtts * 2, MAX_RETRY_RTTS);
    return from;
  }

  /**
   * Bytes the stream carried per base round trip by its last measurement, if it is still
   * flowing (a grant within STALL_RTTS round trips), else 0: what a window must hold for the
   * stream to keep its speed.
   */
  carried(now: number, rttMs: number | undefined): number {
    if (!rttMs || now - this.last > STALL_RTTS * rttMs) return 0;
    return this.perRtt;
  }

  /** Whether a window at its cap may double now (and not beyond BDP_STREAM_WINDOW). */
  mayGrow(window: number, now: number): boolean {
    return (
      now >= this.retryAt &&
      !this.trial &&
      window < BDP_STREAM_WINDOW &&
      this.perRtt >= window * BDP_GROWTH_SHARE
    );
  }

  /** A window at its cap (`from`) just doubled: judged by a measurement from a round trip later. */
  grew(now: number, from: number): void {
    this.trial = { at: now, before: this.perRtt, from };
  }
}
