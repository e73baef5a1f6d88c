import { Duplex } from 'node:stream';
import { MAX_DATA, STREAM_WINDOW } from './protocol';

/** What a stream needs from its session (implemented by TunnelSession). */
export interface StreamHost {
  sendable(sid: number): number;
  sendData(sid: number, data: Buffer): void;
  sendFin(sid: number): void;
  sendReset(sid: number, reason: string): void;
  scheduleCredit(stream: TunnelStream): void;
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
  private finSent = false;
  private finReceived = false;
  private gone = false;
  private resetReason?: string;

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

  /** Bytes our reader consumed that the peer has not been credited for yet. */
  takeCredit(): number {
    if (this.gone || this.finReceived) return 0;
    const due = this.received - this.readableLength - this.credited;
    this.credited += Math.max(due, 0);
    return Math.max(due, 0);
  }

  /** DATA from the peer (already checked against our window by the multiplexer). */
  onData(data: Buffer): void {
    if (this.gone) return;
    this.received += data.length;
    this.push(data);
    // Also recheck credit here: consumption that happened without a _read call is counted.
    this.host.scheduleCredit(this);
  }

  /** FIN from the peer: end of its data. */
  onFin(): void {
    if (this.gone) return;
    this.finReceived = true;
    this.push(null);
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
    const p = this.pending;
    if (!p || this.gone) return;
    for (;;) {
      const n = Math.min(p.chunk.length - p.offset, MAX_DATA, this.host.sendable(this.sid));
      if (n <= 0) return;
      this.host.sendData(this.sid, p.chunk.subarray(p.offset, p.offset + n));
      p.offset += n;
      if (p.offset === p.chunk.length) {
        this.pending = undefined;
        return p.cb();
      }
    }
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
    this.host.scheduleCredit(this);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.gone) {
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
      this.host.forget(this, 'done');
    }
  }
}
