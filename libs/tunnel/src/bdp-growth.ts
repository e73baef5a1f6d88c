import { BDP_GROWTH_SHARE, BDP_STREAM_WINDOW, BDP_TRIAL_GAIN } from './protocol';

/** Round trips one measurement spans: credit comes in quarter windows, so one is too coarse. */
const MEASURE_RTTS = 4;
/** Round trips without a grant after which the stream counts as stalled. */
const STALL_RTTS = 2;

/**
 * Whether a stream's receive window, already at its cap (MAX_STREAM_WINDOW, or
 * LONE_STREAM_WINDOW alone), should double again: across a long link the window, not the CPU,
 * decides a stream's speed (one window per round trip), and the window a stream needs is the
 * link's bandwidth-delay product, which the receiver cannot know in advance.
 *
 * It measures what the reader consumes per base round trip (the session's shortest PING/PONG),
 * from the credit the stream grants, over MEASURE_RTTS round trips at a time; a measurement in
 * which the stream stalled (no grant for STALL_RTTS round trips: a paused reader, a sender with
 * nothing to send) is dropped. A reader slower than the link makes a doubling that does not
 * pay, which is undone. (Not dropped: a measurement with bytes left unread at some grant. A
 * reader that pipes to a socket has some at most grants, and no measurement would ever end.) A doubling is tried only while a round trip carries at
 * least BDP_GROWTH_SHARE of the window, and it is a trial: a measurement started a round trip
 * after it (when the new credit has had time to bring bytes) must carry BDP_TRIAL_GAIN times
 * what the one before it did, else the doubling is undone and the stream
 * grows no more past its cap. A window past the BDP would only queue the stream's bytes in the
 * link ahead of every other stream's (a small request behind a download), and buys nothing.
 * Without a measured round trip, nothing grows.
 */
export class BdpGrowth {
  /** Where the current measurement started: time (ms) and bytes credited by then. */
  private sample?: { at: number; credited: number };
  /** The previous grant (ms). */
  private last = 0;
  /** Bytes consumed per round trip, by the last finished measurement. */
  private perRtt = 0;
  private trial?: { at: number; before: number; from: number };
  /** A doubling did not pay: no more growth past the cap for this stream. */
  private settled = false;

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
    if (this.perRtt >= before * BDP_TRIAL_GAIN) return undefined;
    this.settled = true;
    return from;
  }

  /** Whether a window at its cap may double now (and not beyond BDP_STREAM_WINDOW). */
  mayGrow(window: number): boolean {
    return (
      !this.settled &&
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
