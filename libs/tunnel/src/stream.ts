import { Duplex, type Writable } from 'node:stream';
import { BdpGrowth } from './bdp-growth';
import { BDP_GROWTH_SHARE, MAX_DATA, MAX_STREAM_WINDOW, STREAM_WINDOW } from './protocol';

/** What a stream needs from its session (implemented by TunnelSession). */
export interface StreamHost {
  sendable(sid: number): number;
  sendData(sid: number, data: Buffer): void;
  /** This stream has DATA waiting and may have credit: the scheduler will call sendNext(). */
  wantSend(stream: TunnelStream): void;
  sendFin(sid: number): void;
  sendReset(sid: number, reason: string): void;
  scheduleCredit(stream: TunnelStream): void;
  /** Takes `n` bytes of the session's window-growth budget; false if it has not that much. */
  reserveGrowth(n: number): boolean;
  /** Gives `n` bytes of window growth back to the session's budget. */
  releaseGrowth(n: number): void;
  /**
   * The stream was closed with nothing unread and nothing unsent after its FIN (sendFin was
   * called): forget it, but keep its id open until the peer's FIN or RESET (a socket's
   * FIN_WAIT), so that DATA still in flight from the peer is dropped, not a violation.
   */
  linger(stream: TunnelStream): void;
  /** How far this stream's receive window may grow now (depends on the other streams). */
  windowCap(stream: TunnelStream): number;
  /** The session's shortest measured round trip (ms), once a PONG came back. */
  baseRttMs(): number | undefined;
  forget(stream: TunnelStream, reason: string): void;
}

/** An error that ends a stream; `reason` is what was sent or received in RESET. */
export class StreamResetError extends Error {
  override readonly name = 'StreamResetError';
  constructor(readonly reason: string) {
    super(`tunnel stream reset: ${reason}`);
  }
}

/**
 * One multiplexed stream as a Node Duplex. Backpressure runs end to end: a write completes only
 * once the peer granted credit for it, and credit is granted only for bytes our reader has
 * consumed, so a reader that stops reading stops its writer, and its buffer never exceeds one
 * window (STREAM_WINDOW).
 */
export class TunnelStream extends Duplex {
  private pending?: { chunk: Buffer; offset: number; cb: (err?: Error | null) => void };
  private received = 0;
  private credited = 0;
  /** This stream's receive window now: STREAM_WINDOW, doubled while the reader keeps up. */
  private window = STREAM_WINDOW;
  /**
   * Credit still to withhold after the window shrank (shallow()): the peer may have the old,
   * larger window in flight, so that much consumption is credited without granting it again.
   */
  private holdback = 0;
  /** Growth past the caps, toward the bandwidth-delay product. */
  private readonly bdp = new BdpGrowth();
  /**
   * The window BdpGrowth's trials brought it to (0: none): it is judged by what it carries and
   * undone by the trial if it does not pay, so another stream joining does not take it back.
   */
  private trialWindow = 0;
  private finSent = false;
  private finReceived = false;
  private gone = false;
  private resetReason?: string;
  private idle?: { ms: number; timer?: NodeJS.Timeout };
  /** The session's queues (send, credit) that hold this stream: a bit each (StreamFifo). */
  queuedIn = 0;
  /** deliverTo(): where the peer's data goes straight to, and whether it asked us to wait. */
  private sink?: { socket: Writable; blocked: boolean };

  constructor(
    private readonly host: StreamHost,
    readonly sid: number,
    readonly target: string,
  ) {
    super({
      readableHighWaterMark: STREAM_WINDOW,
      writableHighWaterMark: 256 * 1024,
      allowHalfOpen: true,
    });
  }

  /**
   * Ends the stream in both directions and tells the peer why (RESET). Locally the stream just
   * closes (no 'error': the caller decided it); the peer's side errors with this reason.
   */
  reset(reason: string): void {
    this.resetReason = reason;
    this.destroy();
  }

  /**
   * Like net.Socket's: emits 'timeout' once no byte has gone either way for `ms` (0 turns it
   * off). What listens decides; the stream stays open. An HTTP server that is handed this
   * stream as a connection (the worker's API) uses it for its keep-alive and idle timeouts,
   * so an idle connection through the tunnel is closed as one on API_LISTEN would be.
   */
  setTimeout(ms: number, callback?: () => void): this {
    if (callback) this.once('timeout', callback);
    clearTimeout(this.idle?.timer);
    this.idle = ms > 0 ? { ms } : undefined;
    this.active();
    return this;
  }

  /** Bytes went one way or the other: the idle timeout starts again. */
  private active(): void {
    const idle = this.idle;
    if (!idle || this.gone) return;
    if (idle.timer) idle.timer.refresh();
    else {
      idle.timer = setTimeout(() => {
        idle.timer = undefined;
        if (!this.gone) this.emit('timeout');
      }, idle.ms);
      idle.timer.unref();
    }
  }

  /** Window growth this stream holds of the session's budget (given back when it ends). */
  get grown(): number {
    return this.window - STREAM_WINDOW + this.holdback;
  }

  /**
   * Credit for what our reader consumed, once that is a quarter of the window (else 0): not
   * after every DATA, so a request/answer exchange costs one frame each way, not two (DATA +
   * WINDOW), and the sender still has three quarters of its window in flight.
   *
   * Window growth: if the reader has consumed everything (its buffer is empty), the window and
   * not the reader is what limits this stream, so the window doubles (up to the host's
   * windowCap: MAX_STREAM_WINDOW, or LONE_STREAM_WINDOW for a stream alone in its session),
   * within the session's growth budget. Past that cap, up to BDP_STREAM_WINDOW, as BdpGrowth
   * decides: a doubling that did not raise what a round trip carries is undone. A reader that
   * falls behind never grows it.
   */
  takeCredit(): number {
    let due = this.creditDue();
    if (due < this.window / 4) return 0;
    this.credited += due;
    const now = performance.now();
    const undo = this.bdp.observe(now, this.credited, this.host.baseRttMs());
    if (undo !== undefined) {
      this.shrinkTo(undo);
      this.trialWindow = Math.min(this.trialWindow, undo);
    }
    if (this.holdback > 0) {
      const withheld = Math.min(this.holdback, due);
      this.holdback -= withheld;
      this.host.releaseGrowth(withheld);
      due -= withheld;
      if (this.holdback > 0) return due; // no growth while shrinking
    }
    if (this.readableLength > 0) return due;
    const belowCap = this.window < this.host.windowCap(this);
    if ((belowCap || this.bdp.mayGrow(this.window, now)) && this.host.reserveGrowth(this.window)) {
      if (!belowCap) this.bdp.grew(now, this.window);
      const extra = this.window;
      this.window *= 2;
      if (!belowCap) this.trialWindow = this.window;
      return due + extra;
    }
    return due;
  }

  /** This stream's receive window now (what the peer may have in flight once any holdback is spent). */
  get receiveWindow(): number {
    return this.window;
  }

  /**
   * Another stream became active: a window grown past MAX_STREAM_WINDOW goes back to it, or to
   * the largest of its doublings that a round trip fills at least half of (BDP_GROWTH_SHARE,
   * the rule BdpGrowth grows by): a window within twice the bandwidth-delay product queues at
   * most one round trip's bytes in the link ahead of the other stream, while cutting it would
   * halve the download's speed at every short request beside it (a lone stream across a long
   * link fills its 4 MiB). On loopback a round trip carries far less than 1 MiB: the window goes
   * back to MAX_STREAM_WINDOW, as before. A window BdpGrowth's trials brought past the cap
   * stays (the trial undoes it if it does not pay): otherwise a short request every few round
   * trips cut every trial short, its measurement still the smaller window's, and a download
   * beside polling requests flapped between 1 and 4 MiB. Credit cannot be taken back, so the excess is withheld
   * from the next grants (takeCredit) until the peer's bytes in flight fit the smaller window;
   * the session's budget gets it back then.
   */
  shallow(): void {
    const carried = this.bdp.carried(performance.now(), this.host.baseRttMs());
    let keep = MAX_STREAM_WINDOW;
    while (keep * 2 <= this.window && keep * 2 * BDP_GROWTH_SHARE <= carried) keep *= 2;
    this.shrinkTo(Math.max(keep, this.trialWindow));
  }

  private shrinkTo(window: number): void {
    if (this.window <= window) return;
    this.holdback += this.window - window;
    this.window = window;
  }

  /**
   * Sends the peer's data straight to `socket` (splice() uses it instead of `pipe`), with its
   * FIN as the socket's end. A chunk the socket takes is consumed, as a pipe would count it;
   * once `write` says to wait, what arrives stays in this stream's buffer (not consumed, so not
   * credited: the peer stops within its window) until the socket's 'drain'. This skips the
   * Readable machinery per chunk (push, 'data', the next tick's read-more check): about 2 % of
   * the relay's CPU in a small request/answer exchange (docs/PROTOCOL.md §8). The readable
   * side is then the sink's alone: nothing else may read from this stream.
   */
  deliverTo(socket: Writable): void {
    const sink = { socket, blocked: false };
    this.sink = sink;
    const drained = (): void => {
      sink.blocked = false;
      this.flushToSink();
    };
    socket.on('drain', drained);
    this.once('end', () => socket.end());
    this.once('close', () => socket.off('drain', drained));
    this.flushToSink();
  }

  /** Moves what waits in the buffer to the sink while it takes it; ends it after the FIN. */
  private flushToSink(): void {
    const sink = this.sink;
    if (!sink) return;
    while (!sink.blocked) {
      // At most a frame's worth at a time, as a pipe takes one chunk: the socket's queue stays
      // within its high-water mark and one chunk, while the rest waits here, uncredited. read()
      // counts the consumption (credit) and, once empty after the peer's FIN, emits 'end'.
      const chunk = this.read(Math.min(this.readableLength, MAX_DATA)) as Buffer | null;
      if (chunk === null) return;
      if (!sink.socket.write(chunk)) sink.blocked = true;
    }
  }

  /** DATA from the peer (already checked against our window by the multiplexer). */
  onData(data: Buffer): void {
    if (this.gone) return;
    this.received += data.length;
    this.active();
    const sink = this.sink;
    // Straight to the sink only while nothing waits before this chunk (the invariant: a sink
    // that is not blocked has an empty buffer behind it) and it can still be written to.
    if (sink && !sink.blocked && this.readableLength === 0 && sink.socket.writable) {
      if (!sink.socket.write(data)) sink.blocked = true;
    } else this.push(data);
    // Also recheck credit here: consumption that happened without a _read call is counted.
    this.maybeCredit();
  }

  /** FIN from the peer: end of its data. */
  onFin(): void {
    if (this.gone) return;
    this.finReceived = true;
    this.push(null);
    this.flushToSink();
    this.maybeDone();
  }

  /** RESET from the peer or the end of the session. */
  onReset(reason: string): void {
    if (this.gone) return;
    this.gone = true;
    this.destroy(new StreamResetError(reason));
  }

  /** More credit arrived: continue a write that was waiting for it. */
  pump(): void {
    if (this.pending && !this.gone && this.host.sendable(this.sid) > 0) this.host.wantSend(this);
  }

  /**
   * The session's scheduler gives this stream its turn: sends at most one DATA frame of the
   * pending write (within credit), completes the write once all of it was sent (after the frame
   * went out, so a FIN that follows can never overtake it). True if more can be sent now.
   */
  sendNext(): boolean {
    const p = this.pending;
    if (!p || this.gone) return false;
    const n = Math.min(p.chunk.length - p.offset, MAX_DATA, this.host.sendable(this.sid));
    if (n <= 0) return false;
    // The whole chunk as it is when it fits one frame (a request, an answer): no view to make.
    const whole = p.offset === 0 && n === p.chunk.length;
    this.host.sendData(this.sid, whole ? p.chunk : p.chunk.subarray(p.offset, p.offset + n));
    this.active();
    p.offset += n;
    if (p.offset === p.chunk.length) {
      this.pending = undefined;
      p.cb(); // may start the next write at once (it sets pending and asks for a turn)
    }
    return this.pending !== undefined && !this.gone && this.host.sendable(this.sid) > 0;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.gone) return cb(new StreamResetError('stream closed'));
    if (chunk.length === 0) return cb();
    this.pending = { chunk, offset: 0, cb };
    this.pump();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.gone) {
      this.finSent = true;
      this.host.sendFin(this.sid);
      this.maybeDone();
    }
    cb();
  }

  override _read(): void {
    this.maybeCredit();
  }

  /**
   * Every consumption of buffered data goes through read() (pipe and 'readable' consumers
   * alike); data pushed to a flowing reader with an empty buffer is consumed at once and counted
   * in onData. Checking credit here, after the bytes left the buffer, means no consumption is
   * ever missed (Readable stops calling _read until the next push).
   */
  override read(size?: number): unknown {
    const chunk: unknown = super.read(size);
    if (chunk !== null) this.maybeCredit();
    return chunk;
  }

  /** Bytes our reader consumed that the peer has not been credited for yet. */
  private creditDue(): number {
    if (this.gone || this.finReceived) return 0;
    return this.received - this.readableLength - this.credited;
  }

  /**
   * No deadlock: a sender blocked on this stream has a full window unacknowledged, so once the
   * reader consumed a quarter of it, the credit is due and goes out.
   */
  private maybeCredit(): void {
    if (this.creditDue() >= this.window / 4) this.host.scheduleCredit(this);
  }

  /**
   * Destroyed without an error or a reset reason, with nothing unread and nothing waiting to be
   * sent: the end of a socket closed in good order (an HTTP server closing an idle keep-alive
   * connection does exactly this). The peer then gets FIN, not RESET, as a TCP peer would get
   * FIN, not RST: through the relay, the client sees a clean end of the connection, and a
   * request it sent at that moment meets a FIN (safe to retry), never a reset.
   */
  private closesCleanly(err: Error | null): boolean {
    return (
      !err &&
      this.resetReason === undefined &&
      this.readableLength === 0 &&
      this.pending === undefined &&
      this.writableLength === 0
    );
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    clearTimeout(this.idle?.timer);
    this.idle = undefined;
    if (!this.gone && this.closesCleanly(err)) {
      this.gone = true;
      if (!this.finSent) {
        this.finSent = true;
        this.host.sendFin(this.sid);
      }
      if (this.finReceived) this.host.forget(this, 'done');
      else this.host.linger(this);
    } else if (!this.gone) {
      this.gone = true;
      const reason =
        this.resetReason ??
        (err instanceof StreamResetError ? err.reason : err ? 'stream error' : 'cancelled');
      this.host.sendReset(this.sid, reason);
      this.host.forget(this, reason);
    }
    const p = this.pending;
    this.pending = undefined;
    p?.cb(err ?? new StreamResetError('stream closed'));
    cb(err);
  }

  /** Both sides sent FIN: the session forgets the stream; the Duplex drains and closes. */
  private maybeDone(): void {
    if (this.finSent && this.finReceived && !this.gone) {
      this.gone = true;
      clearTimeout(this.idle?.timer);
      this.host.forget(this, 'done');
    }
  }
}
