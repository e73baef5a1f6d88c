import { MAX_STREAMS, MAX_WINDOW, SESSION_WINDOW, STREAM_WINDOW } from './constants';
import type { Frame } from './frames';

/** What the session must do with a frame the multiplexer accepted (or why it ends the session). */
export type MuxEvent =
  | { kind: 'open'; sid: number; target: string }
  | { kind: 'refuse'; sid: number; reason: 'too many streams' }
  | { kind: 'data'; sid: number; data: Buffer }
  | { kind: 'fin'; sid: number }
  | { kind: 'reset'; sid: number; reason: string }
  | { kind: 'window'; sid: number }
  | { kind: 'ping'; body: Buffer }
  | { kind: 'pong'; body: Buffer }
  | { kind: 'close'; reason: string }
  | { kind: 'ignore' }
  | { kind: 'violation'; reason: 'protocol violation' | 'window exceeded' };

interface StreamState {
  /** Bytes we may still send on this stream. */
  sendCredit: number;
  /** Bytes the peer may still send before it exceeds what we granted. */
  recvAllowed: number;
  gotFin: boolean;
}

const VIOLATION: MuxEvent = { kind: 'violation', reason: 'protocol violation' };
const OVER_WINDOW: MuxEvent = { kind: 'violation', reason: 'window exceeded' };
const IGNORE: MuxEvent = { kind: 'ignore' };

/**
 * The stream multiplexer's bookkeeping, without I/O: stream ids, the stream cap, and the
 * credit windows of docs/PROTOCOL.md ("Streams", "Flow control"). The session feeds it every
 * decoded frame and asks it how much it may send; it is what bounds memory against a peer.
 */
export class Multiplexer {
  private readonly streams = new Map<number, StreamState>();
  private nextLocal: number;
  private lastPeer = 0;
  private peerOpen = 0;
  private sessionSend = SESSION_WINDOW;
  private sessionRecvAllowed = SESSION_WINDOW;
  private sessionCreditDue = 0;

  constructor(
    initiator: boolean,
    private readonly maxStreams = MAX_STREAMS,
  ) {
    // Initiator odd ids, responder even: both can open streams without ever colliding.
    this.nextLocal = initiator ? 1 : 2;
  }

  /** Allocates an id for a stream we open, or undefined at the cap (or when ids run out). */
  openLocal(): number | undefined {
    if (this.localCount() >= this.maxStreams || this.nextLocal > 0xffffffff) return undefined;
    const sid = this.nextLocal;
    this.nextLocal += 2;
    this.streams.set(sid, { sendCredit: STREAM_WINDOW, recvAllowed: STREAM_WINDOW, gotFin: false });
    return sid;
  }

  /** Validates a frame against stream state and windows, updating both. */
  receive(f: Frame): MuxEvent {
    switch (f.type) {
      case 'open':
        return this.onOpen(f.sid, f.target);
      case 'data':
        return this.onData(f.sid, f.data);
      case 'window':
        return this.onWindow(f.sid, f.increment);
      case 'fin':
      case 'reset':
        return this.onEnd(f);
      case 'ping':
      case 'pong':
        return { kind: f.type, body: f.body };
      case 'close':
        return { kind: 'close', reason: f.reason };
    }
  }

  /** Bytes that may be sent on `sid` now: the smaller of its window and the session's. */
  sendable(sid: number): number {
    const s = this.streams.get(sid);
    return s ? Math.min(s.sendCredit, this.sessionSend) : 0;
  }

  /** Records `n` bytes sent on `sid` (n ≤ sendable(sid)). */
  consumeSend(sid: number, n: number): void {
    const s = this.streams.get(sid);
    if (s) s.sendCredit -= n;
    this.sessionSend -= n;
  }

  /** Records that we granted the peer `n` more bytes on `sid` (a WINDOW we send). */
  grant(sid: number, n: number): void {
    const s = this.streams.get(sid);
    if (s) s.recvAllowed += n;
  }

  /**
   * Session credit to hand back (a WINDOW for id 0), once a quarter of the window was received:
   * session credit comes back on receipt, so a stalled stream never holds it.
   */
  takeSessionCredit(): number {
    if (this.sessionCreditDue < SESSION_WINDOW / 4) return 0;
    const n = this.sessionCreditDue;
    this.sessionCreditDue = 0;
    this.sessionRecvAllowed += n;
    return n;
  }

  /** Forgets a stream (both FINs done, or RESET sent or received). */
  remove(sid: number): void {
    if (this.streams.delete(sid) && this.isPeerId(sid)) this.peerOpen--;
  }

  has(sid: number): boolean {
    return this.streams.has(sid);
  }

  get count(): number {
    return this.streams.size;
  }

  private onOpen(sid: number, target: string): MuxEvent {
    if (!this.isPeerId(sid) || sid <= this.lastPeer) return VIOLATION;
    this.lastPeer = sid;
    if (this.peerOpen >= this.maxStreams)
      return { kind: 'refuse', sid, reason: 'too many streams' };
    this.peerOpen++;
    this.streams.set(sid, { sendCredit: STREAM_WINDOW, recvAllowed: STREAM_WINDOW, gotFin: false });
    return { kind: 'open', sid, target };
  }

  private onData(sid: number, data: Buffer): MuxEvent {
    this.sessionRecvAllowed -= data.length;
    if (this.sessionRecvAllowed < 0) return OVER_WINDOW;
    this.sessionCreditDue += data.length;
    const s = this.streams.get(sid);
    if (!s) return this.wasOpened(sid) ? IGNORE : VIOLATION;
    if (s.gotFin) return VIOLATION;
    s.recvAllowed -= data.length;
    return s.recvAllowed < 0 ? OVER_WINDOW : { kind: 'data', sid, data };
  }

  private onWindow(sid: number, increment: number): MuxEvent {
    if (sid === 0) {
      this.sessionSend += increment;
      return this.sessionSend > MAX_WINDOW ? OVER_WINDOW : { kind: 'window', sid };
    }
    const s = this.streams.get(sid);
    if (!s) return this.wasOpened(sid) ? IGNORE : VIOLATION;
    s.sendCredit += increment;
    return s.sendCredit > MAX_WINDOW ? OVER_WINDOW : { kind: 'window', sid };
  }

  private onEnd(
    f: { type: 'fin'; sid: number } | { type: 'reset'; sid: number; reason: string },
  ): MuxEvent {
    const s = this.streams.get(f.sid);
    if (!s) return this.wasOpened(f.sid) ? IGNORE : VIOLATION;
    if (f.type === 'reset') return { kind: 'reset', sid: f.sid, reason: f.reason };
    if (s.gotFin) return VIOLATION;
    s.gotFin = true;
    return { kind: 'fin', sid: f.sid };
  }

  private isPeerId(sid: number): boolean {
    return sid % 2 !== this.nextLocal % 2;
  }

  /** True for an id that was valid once (a frame for it may have crossed a RESET). */
  private wasOpened(sid: number): boolean {
    return this.isPeerId(sid) ? sid <= this.lastPeer : sid < this.nextLocal;
  }

  private localCount(): number {
    return this.streams.size - this.peerOpen;
  }
}
