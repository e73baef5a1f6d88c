import { EventEmitter } from 'node:events';
import type { Logger } from '../../config/src';
import {
  decodeFrame,
  encodeFrame,
  encodeHeaderInto,
  FRAME_DATA,
  FRAME_HEADER_BYTES,
  FrameOpener,
  FrameSealer,
  LONE_STREAM_QUIET_MS,
  LONE_STREAM_WINDOW,
  MAX_STREAM_WINDOW,
  Multiplexer,
  SEND_QUEUE_LIMIT,
  SEND_WATERMARK,
  TARGET_NAME,
  WINDOW_GROWTH_BUDGET,
} from './protocol';
import type { Frame, MuxEvent, SessionKeys } from './protocol';
import { Liveness } from './liveness';
import { StreamResetError, TunnelStream, type StreamHost } from './stream';
import { StreamFifo } from './stream-fifo';
import type { TunnelMetrics } from './metrics';
import { metricReason, noopTunnelMetrics } from './metrics';
import type { MessageChannel } from './transport/channel';

/** Options shared by both ends of a session. */
export interface SessionOptions {
  /** True on the side that dialed (odd stream ids). Independent of who opens streams. */
  initiator: boolean;
  logger: Logger;
  metrics?: TunnelMetrics;
  /** PING period; a peer silent for 2 periods is dead (found within 3). Default 10 s. */
  pingIntervalMs?: number;
  /** Concurrent streams the peer may open (default MAX_STREAMS). */
  maxStreams?: number;
  /**
   * The peer as a metric label (`tunnel_up{peer}`): the dialed URL's host, or on a listener the
   * peer's address without its port, so that reconnects do not add a series each. Default: peer.
   */
  metricsPeer?: string;
}

/** Reasons that are failures of the peer's frames (counted by `frameRejected`). */
const FRAME_FAILURES = new Set([
  'decrypt failed',
  'bad frame',
  'protocol violation',
  'window exceeded',
  'text message',
  'frame too large',
]);

/**
 * An authenticated, encrypted, multiplexed tunnel session (docs/PROTOCOL.md, "Frames").
 * Both ends use it; either may open streams. Events: `stream` (target, TunnelStream) for each stream
 * the peer opens (with no listener, streams are refused), `close` (reason) once, at the end.
 */
export class TunnelSession extends EventEmitter implements StreamHost {
  readonly peer: string;
  private readonly metricsPeer: string;
  private readonly sealer: FrameSealer;
  private readonly opener: FrameOpener;
  private readonly mux: Multiplexer;
  private readonly streams = new Map<number, TunnelStream>();
  /** Ids of streams closed here in good order (FIN sent) whose peer has not ended yet. */
  private readonly lingering = new Set<number>();
  /** Streams whose reader consumed enough for a WINDOW (flushCredit, once per turn). */
  private readonly creditQueue = new StreamFifo<TunnelStream>(1);
  /** Streams with DATA to send and credit for it, served round-robin (first in, first out). */
  private readonly ready = new StreamFifo<TunnelStream>(2);
  /** Bytes handed to the channel that it has not written out yet (see flushData). */
  private unsent = 0;
  private flushing = false;
  private readonly metrics: TunnelMetrics;
  private readonly log: Logger;
  private readonly liveness: Liveness;
  private creditScheduled = false;
  /**
   * The plaintext header of the DATA frame being sealed (sendData), reused for every one: the
   * sealer reads it during the call and keeps nothing of it (FrameSealer.sealWire).
   */
  private readonly dataHeader = Buffer.alloc(FRAME_HEADER_BYTES);
  /** What is left of WINDOW_GROWTH_BUDGET: bounds the receive windows beyond the initial ones. */
  private growthLeft = WINDOW_GROWTH_BUDGET;
  /** When two or more streams were last open together (performance.now(); see windowCap). */
  private crowdedAt = -Infinity;
  private closedReason?: string;
  /** Resolves with the reason once the session ended (it may end inside the constructor). */
  readonly closed: Promise<string>;

  constructor(
    private readonly channel: MessageChannel,
    keys: SessionKeys,
    opts: SessionOptions,
  ) {
    super();
    this.peer = channel.peer;
    this.metricsPeer = opts.metricsPeer ?? channel.peer;
    this.sealer = new FrameSealer(keys.send);
    this.opener = new FrameOpener(keys.receive);
    keys.send.fill(0);
    keys.receive.fill(0);
    this.mux = new Multiplexer(opts.initiator, opts.maxStreams);
    this.metrics = opts.metrics ?? noopTunnelMetrics;
    this.log = opts.logger;
    this.closed = new Promise((resolve) => this.once('close', resolve));
    // Before the channel's handlers: a channel may hand over frames that arrived meanwhile at once
    // (the peer's first PING leaves right after its handshake), and they update liveness.
    this.liveness = new Liveness(opts.pingIntervalMs ?? 10_000, {
      sendPing: (body) => this.send({ type: 'ping', body }),
      dead: () => this.fail('ping timeout'),
      rtt: (ms) => this.metrics.rtt(ms / 1000),
    });
    // Up before the handlers: frames the channel hands over at once may end the session here
    // (a CLOSE, a frame that does not open), and its sessionDown must follow this sessionUp.
    this.metrics.sessionUp(this.metricsPeer);
    channel.setCloseHandler((reason) => {
      if (FRAME_FAILURES.has(reason)) this.metrics.frameRejected(reason);
      this.teardown(reason);
    });
    channel.setMessageHandler((data, binary) => this.onMessage(data, binary));
  }

  /** Streams open now, in both directions. */
  get openStreams(): number {
    return this.streams.size;
  }

  /** Last measured round-trip time, from PING/PONG. */
  get rttMs(): number | undefined {
    return this.liveness.rttMs;
  }

  /** Why the session ended, once it has. */
  get closeReason(): string | undefined {
    return this.closedReason;
  }

  /**
   * Opens a stream to a target the peer exposes. Data may be written at once (optimistic open);
   * if the peer refuses the target the stream errors with StreamResetError(reason).
   */
  openStream(target: string): TunnelStream {
    const sid =
      this.closedReason === undefined && TARGET_NAME.test(target)
        ? this.mux.openLocal()
        : undefined;
    const stream = new TunnelStream(this, sid ?? 0, target);
    if (sid === undefined) {
      const reason =
        this.closedReason !== undefined
          ? 'session closed'
          : TARGET_NAME.test(target)
            ? 'too many streams'
            : 'bad target name';
      process.nextTick(() => stream.onReset(reason));
      return stream;
    }
    this.addStream(stream);
    this.send({ type: 'open', sid, target });
    this.metrics.streamOpened();
    return stream;
  }

  /** Sends an authenticated CLOSE and closes the connection; resolves once the session ended. */
  async close(reason = 'closed'): Promise<string> {
    if (this.closedReason === undefined) {
      this.send({ type: 'close', reason });
      this.channel.close(1000);
      this.teardown(`closed: ${reason}`);
    }
    return this.closed;
  }

  // ---- StreamHost (called by TunnelStream) ----

  sendable(sid: number): number {
    return this.closedReason === undefined ? this.mux.sendable(sid) : 0;
  }

  sendData(sid: number, data: Buffer): void {
    this.mux.consumeSend(sid, data.length);
    if (this.closedReason !== undefined) return;
    // Not send()'s Frame and encodeFrame's objects: DATA is most frames, and each object there
    // was allocated per frame.
    this.sendSealed(encodeHeaderInto(this.dataHeader, FRAME_DATA, sid), data);
  }

  wantSend(stream: TunnelStream): void {
    if (this.closedReason !== undefined) return;
    this.ready.push(stream);
    this.flushData();
  }

  sendFin(sid: number): void {
    this.send({ type: 'fin', sid });
  }

  sendReset(sid: number, reason: string): void {
    if (sid !== 0) this.send({ type: 'reset', sid, reason });
  }

  scheduleCredit(stream: TunnelStream): void {
    this.creditQueue.push(stream);
    if (this.creditScheduled) return;
    this.creditScheduled = true;
    // Coalesced: one WINDOW per stream per event-loop turn, not one per read.
    setImmediate(() => this.flushCredit());
  }

  reserveGrowth(n: number): boolean {
    if (n > this.growthLeft) return false;
    this.growthLeft -= n;
    return true;
  }

  releaseGrowth(n: number): void {
    this.growthLeft += n;
  }

  /**
   * A stream alone in the session, with no other stream open for LONE_STREAM_QUIET_MS, may grow
   * its window to LONE_STREAM_WINDOW: its bytes in flight delay no one. Otherwise to
   * MAX_STREAM_WINDOW, so that a bulk stream queues at most that much ahead of the others.
   */
  windowCap(stream: TunnelStream): number {
    const lone =
      this.streams.size === 1 &&
      this.streams.get(stream.sid) === stream &&
      performance.now() - this.crowdedAt >= LONE_STREAM_QUIET_MS;
    return lone ? LONE_STREAM_WINDOW : MAX_STREAM_WINDOW;
  }

  baseRttMs(): number | undefined {
    return this.liveness.baseRttMs;
  }

  forget(stream: TunnelStream, reason: string): void {
    if (!this.release(stream)) return;
    this.mux.remove(stream.sid);
    if (reason !== 'done')
      this.log.debug({ sid: stream.sid, target: stream.target, reason }, 'tunnel stream reset');
  }

  linger(stream: TunnelStream): void {
    // The id stays open in the multiplexer (and counts against its cap) until the peer's FIN
    // or RESET: DATA it sent before it saw our FIN is dropped there, within its window.
    if (this.release(stream)) this.lingering.add(stream.sid);
  }

  /** Takes a stream out of the session's own books (not the multiplexer's); false if not in. */
  private release(stream: TunnelStream): boolean {
    if (this.streams.get(stream.sid) !== stream) return false;
    if (this.streams.size >= 2) this.crowdedAt = performance.now();
    this.streams.delete(stream.sid);
    this.growthLeft += stream.grown;
    this.metrics.streamClosed();
    return true;
  }

  /** The peer ended a stream we had closed already (FIN or RESET): its id is free now. */
  private endLingering(sid: number): void {
    if (this.lingering.delete(sid)) this.mux.remove(sid);
  }

  // ---- internals ----

  /**
   * Registers a new stream. If it joins a stream that was alone, that one's window shrinks back
   * to MAX_STREAM_WINDOW (a deep window only exists while a stream is alone, so there is at
   * most one to shrink).
   */
  private addStream(stream: TunnelStream): void {
    if (this.streams.size === 1) this.streams.values().next().value?.shallow();
    this.streams.set(stream.sid, stream);
    if (this.streams.size >= 2) this.crowdedAt = performance.now();
  }

  private flushCredit(): void {
    this.creditScheduled = false;
    for (let stream = this.creditQueue.shift(); stream; stream = this.creditQueue.shift()) {
      const n = stream.takeCredit();
      if (n > 0 && this.mux.has(stream.sid)) {
        this.mux.grant(stream.sid, n);
        this.send({ type: 'window', sid: stream.sid, increment: n });
      }
    }
  }

  /**
   * The fair send scheduler (docs/PROTOCOL.md, "Send scheduling"). Control frames go out at
   * once (send); DATA waits in its stream (a write completes only once all of it was sent) and
   * is sent from here: one frame of at most MAX_DATA per ready stream per turn, round-robin,
   * and only while the channel holds less than SEND_WATERMARK unwritten bytes. So a bulk
   * stream queues at most about one watermark ahead of another stream's frame, not its whole
   * window. Each frame is sealed when it is sent, so the counter nonces follow the wire order.
   */
  private flushData(): void {
    if (this.flushing) return; // re-entered from a write callback: the loop below goes on
    this.flushing = true;
    try {
      while (this.unsent < SEND_WATERMARK && this.closedReason === undefined) {
        const stream = this.ready.shift();
        if (!stream) break;
        // Back of the queue if it has more; a stream that ran out of credit comes back by pump().
        if (stream.sendNext()) this.ready.push(stream);
      }
    } finally {
      this.flushing = false;
    }
  }

  private readonly onSent = (n: number): void => {
    this.unsent -= n;
    if (this.ready.size > 0 && this.unsent < SEND_WATERMARK) this.flushData();
  };

  /**
   * Seals and hands one frame to the channel. DATA is held back by the scheduler (flushData),
   * but control frames go out at once, and most are answers to the peer's own frames (PONG to
   * PING, RESET to an OPEN it may not make, WINDOW for its DATA): a peer that sends those and
   * never reads would grow this queue without end. Past SEND_QUEUE_LIMIT bytes not yet written
   * to the socket the session ends (`send queue full`): a legitimate peer reads, and what it
   * can make us queue in the meantime is a small multiple of the DATA watermark.
   */
  private send(frame: Frame): void {
    if (this.closedReason !== undefined) return;
    const { header, body } = encodeFrame(frame);
    this.sendSealed(header, body);
  }

  /** Seals a frame's plaintext header and body and hands the frame to the channel. */
  private sendSealed(header: Buffer, body?: Buffer): void {
    const wire = this.sealer.sealWire(header, body);
    if (!wire) return this.fail('counter exhausted');
    let n = 0;
    if (Buffer.isBuffer(wire)) n = wire.length;
    else for (const part of wire) n += part.length;
    this.unsent += n;
    this.channel.send(wire, this.onSent); // onSent(n) once written
    this.metrics.bytes('out', n);
    if (this.unsent > SEND_QUEUE_LIMIT) this.fail('send queue full');
  }

  private onMessage(data: Buffer, binary: boolean): void {
    if (this.closedReason !== undefined) return;
    this.metrics.bytes('in', data.length);
    if (!binary) return this.fail('text message');
    const plain = this.opener.open(data);
    if (!plain) return this.fail('decrypt failed');
    const frame = decodeFrame(plain);
    if (!frame) return this.fail('bad frame');
    this.liveness.received();
    this.dispatch(this.mux.receive(frame));
    const credit = this.mux.takeSessionCredit();
    if (credit > 0) this.send({ type: 'window', sid: 0, increment: credit });
  }

  private dispatch(ev: MuxEvent): void {
    switch (ev.kind) {
      case 'open':
        return this.onPeerOpen(ev.sid, ev.target);
      case 'refuse':
        this.metrics.streamRefused(ev.reason);
        return this.sendReset(ev.sid, ev.reason);
      case 'data':
        return this.streams.get(ev.sid)?.onData(ev.data);
      case 'fin': {
        const stream = this.streams.get(ev.sid);
        return stream ? stream.onFin() : this.endLingering(ev.sid);
      }
      case 'reset':
        return this.onPeerReset(ev.sid, ev.reason);
      case 'window':
        return this.onWindow(ev.sid);
      case 'ping':
        return this.send({ type: 'pong', body: ev.body });
      case 'pong':
        return this.liveness.pong(ev.body);
      case 'close':
        this.channel.close(1000);
        return this.teardown(`peer closed: ${ev.reason}`);
      case 'violation':
        return this.fail(ev.reason);
      case 'ignore':
        return;
    }
  }

  private onPeerOpen(sid: number, target: string): void {
    if (this.listenerCount('stream') === 0) {
      // Nobody serves streams on this end: refuse without making a stream object.
      this.mux.remove(sid);
      this.metrics.streamRefused('unknown target');
      return this.sendReset(sid, 'unknown target');
    }
    const stream = new TunnelStream(this, sid, target);
    this.addStream(stream);
    this.metrics.streamOpened();
    this.emit('stream', target, stream);
  }

  private onPeerReset(sid: number, reason: string): void {
    const stream = this.streams.get(sid);
    if (!stream) return this.endLingering(sid);
    this.forget(stream, `reset by peer: ${reason}`);
    stream.onReset(reason);
  }

  private onWindow(sid: number): void {
    if (sid !== 0) return this.streams.get(sid)?.pump();
    for (const stream of this.streams.values()) stream.pump();
  }

  /** Any failure ends the whole session: tell the peer why (authenticated), then drop. */
  private fail(reason: string): void {
    if (this.closedReason !== undefined) return;
    if (FRAME_FAILURES.has(reason)) this.metrics.frameRejected(reason);
    // A silent peer will not answer a close handshake, and one that does not read would not
    // even see the CLOSE: drop the socket at once.
    if (reason === 'ping timeout' || reason === 'send queue full') {
      this.teardown(reason);
      return this.channel.terminate();
    }
    this.send({ type: 'close', reason });
    this.channel.close(1002);
    this.teardown(reason);
  }

  private teardown(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    this.liveness.stop();
    this.ready.clear();
    this.creditQueue.clear();
    this.lingering.clear();
    this.sealer.wipe();
    this.opener.wipe();
    for (const stream of [...this.streams.values()]) {
      this.forget(stream, reason);
      stream.onReset(`tunnel closed: ${reason}`);
    }
    const level = reason.startsWith('closed') || reason.startsWith('peer closed') ? 'info' : 'warn';
    this.log[level]({ peer: this.peer, reason }, 'tunnel session ended');
    // `peer closed: <reason>` carries the peer's own words: the label is its fixed part.
    this.metrics.sessionDown(this.metricsPeer, metricReason(reason));
    this.emit('close', reason);
  }
}

export { StreamResetError, TunnelStream };
