import type { IncomingMessage } from 'node:http';
import type { Agent } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { CLOSE_BAD_KEY, CLOSE_GRACE_MS, MAX_WS_MESSAGE, PROTOCOL_VERSION } from '../protocol';
import type { MessageChannel } from './channel';

/*
 * The one file that imports `ws`: one adapter per outside library, so that replacing it touches
 * this file alone. bufferutil is a
 * dependency, so ws masks and unmasks in native code. Compression is off: it costs CPU on
 * ciphertext that does not compress, and compressing before encryption leaks (CRIME).
 */

/**
 * Writes the header of one unfragmented binary WebSocket frame of `length` payload bytes
 * (RFC 6455 §5.2) into `out` at `at`: FIN and opcode 2, then the 7-bit, 16-bit or 64-bit
 * length form; a client frame has the MASK bit and a mask key of zeros (see zeroMask: the
 * payload is sent unchanged). Returns the offset after it.
 */
function writeFrameHeader(out: Buffer, at: number, length: number, masked: boolean): number {
  const mask = masked ? 0x80 : 0;
  out[at] = 0x82;
  if (length < 126) {
    out[at + 1] = mask | length;
    at += 2;
  } else if (length < 65536) {
    out[at + 1] = mask | 126;
    out.writeUInt16BE(length, at + 2);
    at += 4;
  } else {
    out[at + 1] = mask | 127;
    out.writeUInt16BE(0, at + 2); // lengths stay below 2^48
    out.writeUIntBE(length, at + 4, 6);
    at += 10;
  }
  if (masked) {
    out.fill(0, at, at + 4); // the mask key: zeros
    at += 4;
  }
  return at;
}

/** Bytes of the header writeFrameHeader writes for `length`. */
function frameHeaderBytes(length: number, masked: boolean): number {
  return (length < 126 ? 2 : length < 65536 ? 4 : 10) + (masked ? 4 : 0);
}

/** The header of one binary WebSocket frame of `length` payload bytes, as a buffer of its own. */
export function binaryFrameHeader(length: number, masked: boolean): Buffer {
  // allocUnsafe: from Node's pool; every byte is written by writeFrameHeader.
  const header = Buffer.allocUnsafe(frameHeaderBytes(length, masked));
  writeFrameHeader(header, 0, length, masked);
  return header;
}

/**
 * A turn's frames up to this many bytes in all (headers included) are copied into one buffer
 * and written with one `write`: for round trips and control frames a copy of a few hundred
 * bytes costs less than Node's Writable buffering each part under a cork. Larger turns (bulk
 * DATA: up to SEND_WATERMARK) are written part by part under a cork, as one `writev`.
 */
const SMALL_BATCH = 16 * 1024;

/**
 * Write coalescing and gathered frames, for one connection. Every message sent in an event-loop
 * turn is queued here (its parts, not joined) and a nextTick writes the turn's messages to the
 * socket under the WebSocket at once: one `write` of one buffer for a small turn, else the
 * frames' headers and parts under a cork, one `writev`. So OPEN and its first DATA, DATA and
 * WINDOW, or the scheduler's run of DATA leave in one system call and wake the peer once, and a
 * sealed frame given as parts is never joined into a buffer of its own first (ws.send takes one
 * buffer: for a 64 KiB DATA frame that was an allocation and a copy, a quarter of sealing it).
 * Nothing waits longer than the current turn.
 *
 * Before 2026-12-06 the first message of a turn corked the socket and each message was
 * written under the cork; the Writable's buffering of every part under it (an entry per write,
 * its writev's arrays, a callback per message) cost about 560 of the 4,724 bytes the relay
 * allocated per 4-byte round trip, which this batch saves (docs/PROTOCOL.md §8).
 *
 * Safe beside ws's own writes (its close frame, a pong to a peer's ping): each of ours is one
 * write of whole frames, so ws's never lands inside one of our frames; the peer's ws reads
 * exactly the frames ws.send would have written (same header, same payload, mask key zero
 * either way). What ws writes itself can go out before frames queued earlier in the same turn:
 * so close() and terminate() below flush or drop the queue first, and our close frame always
 * follows our last message, as the session's CLOSE before the WebSocket close needs.
 */
class FrameBatch {
  /** The turn's messages: their parts, and per message its length, parts and `sent`. */
  private readonly parts: Buffer[] = [];
  private readonly lengths: number[] = [];
  private readonly partCounts: number[] = [];
  private readonly sent: (((bytes: number) => void) | undefined)[] = [];
  private messages = 0;
  private nParts = 0;
  private wire = 0;
  private scheduled = false;

  /**
   * `socket`: the connection under the WebSocket, known once it is open (a dialer learns it
   * with the 101 answer, before 'open'), so always by the time a message is flushed.
   */
  constructor(
    private readonly socket: () => Duplex | undefined,
    private readonly masked: boolean,
    private readonly isOpen: () => boolean,
  ) {}

  add(data: Buffer | readonly Buffer[], sent?: (bytes: number) => void): void {
    const length = messageLength(data);
    if (Buffer.isBuffer(data)) {
      this.parts[this.nParts++] = data;
      this.partCounts[this.messages] = 1;
    } else {
      for (const part of data) this.parts[this.nParts++] = part;
      this.partCounts[this.messages] = data.length;
    }
    this.sent[this.messages] = sent;
    this.lengths[this.messages++] = length;
    this.wire += frameHeaderBytes(length, this.masked) + length;
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(this.flush);
    }
  }

  /** Writes what the turn queued (at its end, or now, before a close). */
  readonly flush = (): void => {
    this.scheduled = false;
    if (this.messages === 0) return;
    const socket = this.socket();
    if (!socket || !this.isOpen() || socket.destroyed || !socket.writable) return this.drop();
    const done = this.takeCallbacks();
    if (this.wire <= SMALL_BATCH) {
      // allocUnsafe: every byte is written below (headers, then each part in order).
      const out = Buffer.allocUnsafe(this.wire);
      let at = 0;
      let p = 0;
      for (let m = 0; m < this.messages; m++) {
        at = writeFrameHeader(out, at, this.lengths[m], this.masked);
        for (let end = p + this.partCounts[m]; p < end; p++) {
          out.set(this.parts[p], at);
          at += this.parts[p].length;
        }
      }
      this.reset();
      socket.write(out, done);
      return;
    }
    socket.cork();
    const last = this.nParts - 1;
    let p = 0;
    for (let m = 0; m < this.messages; m++) {
      socket.write(binaryFrameHeader(this.lengths[m], this.masked));
      // The last write's callback runs once every write before it was handed over too.
      for (let end = p + this.partCounts[m]; p < end; p++)
        socket.write(this.parts[p], p === last ? done : undefined);
    }
    this.reset();
    socket.uncork();
  };

  /** Drops what is queued (the connection is being dropped); its callbacks still run. */
  drop(): void {
    this.scheduled = false;
    if (this.messages === 0) return;
    const done = this.takeCallbacks();
    this.reset();
    if (done) process.nextTick(done);
  }

  /** One callback for the queued messages' `sent` callbacks (each with its length), if any. */
  private takeCallbacks(): (() => void) | undefined {
    const n = this.messages;
    if (n === 1) {
      // The common turn (a round trip's one frame): no arrays.
      const callback = this.sent[0];
      const bytes = this.lengths[0];
      return callback && (() => callback(bytes));
    }
    const callbacks = this.sent.slice(0, n);
    const bytes = this.lengths.slice(0, n);
    return () => {
      for (let i = 0; i < n; i++) callbacks[i]?.(bytes[i]);
    };
  }

  private reset(): void {
    this.sent.fill(undefined, 0, this.messages);
    this.parts.fill(undefined as never, 0, this.nParts); // let the buffers go
    this.messages = 0;
    this.nParts = 0;
    this.wire = 0;
  }
}

/** Bytes of a message given whole or as parts. */
function messageLength(data: Buffer | readonly Buffer[]): number {
  if (Buffer.isBuffer(data)) return data.length;
  let n = 0;
  for (const part of data) n += part.length;
  return n;
}

/**
 * Wraps an open WebSocket as a MessageChannel; `socket` is the connection it runs on, and
 * `masked` says whether this end is the client (whose frames carry a mask key).
 */
function wrap(
  ws: WebSocket,
  peer: string,
  socket: () => Duplex | undefined,
  masked: boolean,
): MessageChannel {
  const batch = new FrameBatch(socket, masked, () => ws.readyState === WebSocket.OPEN);
  let handler: ((data: Buffer, binary: boolean) => void) | undefined;
  let onClose: ((reason: string) => void) | undefined;
  let closedReason: string | undefined;
  let errorCode: string | undefined;
  const queue: [Buffer, boolean][] = [];
  ws.on('message', (data: Buffer, binary: boolean) => {
    if (handler) handler(data, binary);
    else queue.push([data, binary]);
  });
  ws.on('error', (err: Error & { code?: string }) => {
    errorCode ??= err.code ?? 'error';
  });
  ws.on('close', (code: number) => {
    closedReason =
      code === 1009 || errorCode === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'
        ? 'frame too large'
        : code === CLOSE_BAD_KEY
          ? 'bad key'
          : 'connection lost';
    onClose?.(closedReason);
  });
  return {
    peer,
    send: (data, sent) => {
      // A closed socket never writes: `sent` runs on the next tick instead.
      if (ws.readyState !== WebSocket.OPEN) {
        if (sent) process.nextTick(sent, messageLength(data));
        return;
      }
      batch.add(data, sent);
    },
    close: (code = 1000, reason = '') => {
      batch.flush();
      ws.close(code, reason);
    },
    terminate: () => {
      batch.drop();
      ws.terminate();
    },
    setMessageHandler(h) {
      handler = h;
      while (handler && queue.length > 0) {
        const [data, binary] = queue.shift()!;
        handler(data, binary);
      }
    },
    setCloseHandler(h) {
      onClose = h;
      if (closedReason !== undefined) h(closedReason);
    },
  };
}

/** `host:port` of a socket's remote end. */
export function remoteOf(req: IncomingMessage): string {
  const s = req.socket;
  return `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`;
}

/** True if the upgrade request offers exactly this protocol version. */
export function offersVersion(req: IncomingMessage): boolean {
  const header = req.headers['sec-websocket-protocol'] ?? '';
  return header.split(',').some((p) => p.trim() === PROTOCOL_VERSION);
}

/**
 * ws's `closeTimeout` (in ws since 8.18, not yet in @types/ws): a close frame unanswered for
 * CLOSE_GRACE_MS drops the connection, on both ends.
 */
const closeGrace = { closeTimeout: CLOSE_GRACE_MS } as object;

/** Accepts WebSocket upgrades that the listener has already checked. */
export class UpgradeAcceptor {
  private readonly wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: MAX_WS_MESSAGE,
    handleProtocols: () => PROTOCOL_VERSION,
    ...closeGrace,
  });

  /** Completes the upgrade and hands over the channel. */
  accept(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    done: (channel: MessageChannel) => void,
  ): void {
    const peer = remoteOf(req);
    this.wss.handleUpgrade(req, socket, head, (ws) => done(wrap(ws, peer, () => socket, false)));
  }

  close(): void {
    this.wss.close();
  }
}

/**
 * Client-to-server masking (RFC 6455 §10.3) keeps a browser's attacker-chosen bytes from
 * looking like HTTP to a proxy cache. Every tunnel message is ciphertext or a fixed-format
 * handshake message that no attacker chooses, so the mask is zero: ws then skips a copy and an
 * XOR pass over every frame the dialer sends.
 */
function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

/** Options for dialing. */
export interface DialOptions {
  timeoutMs: number;
  agent?: Agent;
  ca?: Buffer;
  rejectUnauthorized?: boolean;
}

/** Dials a `ws://` or `wss://` URL offering this protocol version; resolves once open. */
export function dialWebSocket(
  url: string,
  opts: DialOptions,
): { channel: Promise<MessageChannel>; cancel(): void } {
  const ws = new WebSocket(url, [PROTOCOL_VERSION], {
    perMessageDeflate: false,
    maxPayload: MAX_WS_MESSAGE,
    handshakeTimeout: opts.timeoutMs,
    agent: opts.agent,
    ca: opts.ca,
    rejectUnauthorized: opts.rejectUnauthorized,
    generateMask: zeroMask,
    ...closeGrace,
  });
  // The connection under the WebSocket, as the 101 answer arrived on it (through a proxy's
  // CONNECT or TLS, it is the socket ws writes to).
  let socket: Duplex | undefined;
  ws.once('upgrade', (res: IncomingMessage) => (socket = res.socket));
  // Wrapped before 'open' so that a message arriving with the 101 answer is queued, not lost.
  const channel = wrap(ws, new URL(url).host, () => socket, true);
  const promise = new Promise<MessageChannel>((resolve, reject) => {
    ws.once('open', () => resolve(channel));
    ws.once('error', (err) => reject(err));
    ws.once('close', () => reject(new Error('connection closed before open')));
  });
  return { channel: promise, cancel: () => ws.terminate() };
}
