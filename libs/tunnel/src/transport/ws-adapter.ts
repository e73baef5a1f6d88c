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
 * Write coalescing: the first message sent in an event-loop turn corks the socket under the
 * WebSocket, and a nextTick uncorks it, so that every message of that turn (OPEN and its first
 * DATA, DATA and WINDOW, a run of DATA from the send scheduler) leaves in one writev and wakes
 * the peer once. ws writes each message as its own write calls; Socket.cork() nests, so ws's
 * own cork/uncork inside a message does not flush ours. Nothing waits longer than the current
 * turn, and end() or destroy() of the socket (close, terminate) flushes or drops it as before.
 */
class Corker {
  private corked = false;
  constructor(private readonly socket: Duplex) {}

  readonly cork = (): void => {
    if (this.corked || this.socket.destroyed) return;
    this.corked = true;
    this.socket.cork();
    process.nextTick(this.uncork);
  };

  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };
}

/**
 * The header of one unfragmented binary WebSocket frame of `length` payload bytes (RFC 6455
 * §5.2): FIN and opcode 2, then the 7-bit, 16-bit or 64-bit length form; a client frame has
 * the MASK bit and a mask key of zeros (see zeroMask: the payload is sent unchanged).
 */
export function binaryFrameHeader(length: number, masked: boolean): Buffer {
  const extra = length < 126 ? 0 : length < 65536 ? 2 : 8;
  // allocUnsafe: one per frame, so from Node's pool; every byte is written below.
  const header = Buffer.allocUnsafe(2 + extra + (masked ? 4 : 0));
  header[0] = 0x82;
  const mask = masked ? 0x80 : 0;
  if (extra === 0) header[1] = mask | length;
  else if (extra === 2) {
    header[1] = mask | 126;
    header.writeUInt16BE(length, 2);
  } else {
    header[1] = mask | 127;
    header.writeUInt16BE(0, 2); // lengths stay below 2^48
    header.writeUIntBE(length, 4, 6);
  }
  if (masked) header.fill(0, 2 + extra); // the mask key: zeros
  return header;
}

/**
 * Messages up to this size given as parts are joined and written once: for control frames and
 * short answers one write call is cheaper, and Buffer.concat takes small buffers from Node's
 * pool instead of allocating.
 */
const SMALL_MESSAGE = 1024;

/**
 * Writes one binary message given as parts straight to the socket under the WebSocket, as one
 * frame: its header, then every part, in one gathered write (the socket is corked for the
 * turn). ws.send takes one buffer, so a sealed DATA frame would otherwise be joined first: a
 * 64 KiB allocation and copy per frame, about a quarter of the cost of sealing it.
 *
 * Safe beside ws's own writes because ws writes synchronously in call order whenever its
 * sender is idle, and it is always idle here: compression is off and nothing sends a Blob,
 * the only two cases in which ws queues a message. So a frame written here and one ws writes
 * (close, pong) never interleave, and the peer's ws reads exactly the frame ws.send would
 * have written (same header, same payload; the mask key is zero either way).
 */
function writeParts(socket: Duplex, parts: readonly Buffer[], masked: boolean, sent?: () => void) {
  let length = 0;
  for (const part of parts) length += part.length;
  const header = binaryFrameHeader(length, masked);
  if (length <= SMALL_MESSAGE) return void socket.write(Buffer.concat([header, ...parts]), sent);
  socket.write(header);
  for (let i = 0; i < parts.length - 1; i++) socket.write(parts[i]);
  socket.write(parts[parts.length - 1], sent);
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
  let corker: Corker | undefined;
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
      // ws calls back once the socket wrote the frame (or failed to); a closed socket never
      // will, so `sent` runs on the next tick instead.
      if (ws.readyState !== WebSocket.OPEN) {
        if (sent) process.nextTick(sent);
        return;
      }
      const s = socket();
      if (s && !corker) corker = new Corker(s);
      corker?.cork();
      if (Buffer.isBuffer(data)) ws.send(data, { binary: true }, sent);
      else if (s && data.length > 0) writeParts(s, data, masked, sent);
      else ws.send(Buffer.concat(data), { binary: true }, sent);
    },
    close: (code = 1000, reason = '') => ws.close(code, reason),
    terminate: () => ws.terminate(),
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
