import type { Socket } from 'node:net';
import type { Logger } from '../../../libs/config/src';
import {
  Admission,
  MAX_STREAMS,
  splice,
  withinFileLimit,
  type TunnelStream,
} from '../../../libs/tunnel/src';
import type { TunnelPool } from './tunnel-pool';

/**
 * A connection to RELAY_LISTEN or a forward that has sent no byte within this time is closed:
 * until its first byte it holds no tunnel stream (a forward whose server speaks first holds
 * one), only a descriptor (README, "Relay connections").
 */
export const FIRST_BYTE_TIMEOUT_MS = 10_000;
/**
 * A connection to RELAY_LISTEN or a forward with no byte either way for this long is closed.
 * Long, because silence is legitimate there: an SSE stream sends a comment every 15 s, a
 * download is never silent, and `logs?follow=1` is silent while its job prints nothing. The
 * worker's own HTTP timeouts close the rest sooner (an idle keep-alive after 5 s, unfinished
 * headers after 60 s).
 */
export const IDLE_TIMEOUT_MS = 10 * 60_000;
/**
 * Once the worker's side has ended (its FIN relayed, every byte of it handed to the kernel), a
 * client connection with no byte either way for this long is closed and its stream reset (as
 * HAProxy's `timeout client-fin`). Until the client closes its side the stream's id stays
 * taken on both ends of the session, and the session has 1,024: without this, a client that
 * made one request and then kept its connection open without a word held an id for the whole
 * idle timeout (the worker's API ends an idle keep-alive after 5 s, but that is a FIN), and
 * 1,024 such clients refused every request for 10 minutes. A client still sending keeps it.
 */
export const FIN_WAIT_MS = 5_000;
/**
 * Connections to one listener waiting for their first byte, at most (and at most a quarter of
 * the descriptor limit); past it the oldest of them is closed, never the newcomer.
 */
export const MAX_WAITING_CLIENTS = 1024;
/**
 * The same cap for a forward whose server speaks first (RELAY_FORWARDS_SERVER_FIRST), whose
 * waiting connections each hold a stream: a quarter of a session's MAX_STREAMS, so that a
 * flood of them leaves streams to RELAY_LISTEN and the other forwards.
 */
export const MAX_WAITING_SERVER_FIRST = MAX_STREAMS / 4;
/**
 * Of those, the share one address may hold (128 of 256): past it a newcomer from that address
 * is closed at the accept, before it costs a stream. Eviction of the oldest (as on RELAY_LISTEN)
 * is no defence here, since every evicted connection had already cost a stream and a
 * connection to the worker's target: a flood that reconnects at once turned the cap into
 * thousands of target connections a second, and legitimate clients waited seconds (once past
 * 10 s) for their greeting. With a share per address the flood holds its half, each for the
 * first-byte timeout, and a client of another address always finds room.
 */
export const SERVER_FIRST_ADDRESS_SHARE = 0.5;
/**
 * Connections one relay listener holds at most (and at most three quarters of the descriptor
 * limit): past it Node closes a newcomer at once, instead of the process running out of
 * descriptors (EMFILE), which would fail every accept and every file it opens.
 */
export const MAX_RELAY_CONNECTIONS = 8192;

/** Why a client connection was closed without being relayed (a metric label: fixed strings). */
export type RefusedReason =
  'no tunnel' | 'first byte timeout' | 'evicted' | 'stream refused' | 'idle timeout';

/** How one relay listener carries its connections. */
export interface ClientOptions {
  /** The worker target: `api` for RELAY_LISTEN, a RELAY_FORWARDS name. */
  target: string;
  /**
   * RELAY_LISTEN: the client speaks HTTP, and what goes wrong before the worker answered is
   * told in an HTTP answer. A forward is raw TCP: a refusal is a close.
   */
  http: boolean;
  /**
   * A forward listed in RELAY_FORWARDS_SERVER_FIRST (MySQL, SMTP, FTP: the server sends a
   * banner before the client says anything): its stream opens at the accept. Otherwise (and
   * always for RELAY_LISTEN) the client speaks first and its stream opens at its first byte.
   * Either way the client's first byte is due within the first-byte timeout, connections
   * waiting for it are capped, and a connection silent both ways is closed at the idle timeout.
   */
  serverFirst?: boolean;
  /** The tunnels: only `pick()` (a session up, if any) and `whyDown()` are used. */
  pool: Pick<TunnelPool, 'pick' | 'whyDown'>;
  log: Logger;
  refused(reason: RefusedReason): void;
  /**
   * Tests only: FIRST_BYTE_TIMEOUT_MS, IDLE_TIMEOUT_MS, FIN_WAIT_MS and MAX_WAITING_CLIENTS (or
   * MAX_WAITING_SERVER_FIRST) otherwise.
   */
  limits?: { firstByteMs?: number; idleMs?: number; finWaitMs?: number; maxWaiting?: number };
}

const HTTP_REQUEST = /^(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS|CONNECT|TRACE) /;

/** A peer-chosen or detailed reason, safe in one line of a text/plain body. */
const oneLine = (s: string): string => s.replace(/[^\x20-\x7e]/g, '?').slice(0, 300);

/** How long an answered client may take to close its side before the relay drops it. */
const LINGER_MS = 5_000;

/**
 * Answers an HTTP client that the relay could not carry its request: `status` with a one-line
 * reason and `Connection: close`. The socket is half-closed, and what the client still sends
 * is read and dropped until it closes (at most LINGER_MS): closing with its bytes unread
 * would send a TCP reset, which can destroy the answer before the client reads it.
 */
function answer(
  socket: Socket,
  status: '502 Bad Gateway' | '503 Service Unavailable',
  why: string,
) {
  const body = `gpu-sidecar relay: ${oneLine(why)}\n`;
  socket.unpipe();
  socket.removeAllListeners('data');
  socket.resume();
  socket.once('end', () => socket.destroy());
  const linger = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once('close', () => clearTimeout(linger));
  socket.end(
    `HTTP/1.1 ${status}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/**
 * The relay's side of its local listeners: turns each accepted connection into a tunnel
 * stream, and keeps connections that send nothing from holding streams or descriptors.
 */
export class RelayClients {
  private readonly waiting: Admission;
  private readonly firstByteMs: number;
  private readonly idleMs: number;
  private readonly finWaitMs: number;

  constructor(private readonly opts: ClientOptions) {
    const limits = opts.limits ?? {};
    const cap = opts.serverFirst ? MAX_WAITING_SERVER_FIRST : MAX_WAITING_CLIENTS;
    this.waiting = new Admission(
      limits.maxWaiting ?? withinFileLimit(cap, 0.25),
      opts.serverFirst ? { addressShare: SERVER_FIRST_ADDRESS_SHARE } : {},
    );
    this.firstByteMs = limits.firstByteMs ?? FIRST_BYTE_TIMEOUT_MS;
    this.idleMs = limits.idleMs ?? IDLE_TIMEOUT_MS;
    this.finWaitMs = Math.min(this.idleMs, limits.finWaitMs ?? FIN_WAIT_MS);
  }

  /** Takes one accepted connection. */
  accept(socket: Socket): void {
    socket.setNoDelay(true);
    socket.on('error', () => socket.destroy());
    const address = socket.remoteAddress ?? '?';
    if (this.waiting.refuses(address)) {
      // SERVER_FIRST_ADDRESS_SHARE: closed before it costs a stream.
      this.opts.refused('evicted');
      return void socket.destroy();
    }
    // Until its first byte the connection holds a place in `waiting` and a timer, and no
    // stream unless its server speaks first. That stream is reset with the close, at once.
    let stream: TunnelStream | undefined;
    const drop = (reason: RefusedReason): void => {
      this.opts.refused(reason);
      stream?.reset(reason);
      socket.destroy();
    };
    const ticket = this.waiting.admitUntil(address, this.firstByteMs, (why) =>
      drop(why === 'evicted' ? 'evicted' : 'first byte timeout'),
    );
    socket.once('close', ticket.leave);
    if (this.opts.serverFirst) {
      // The stream opens at the end of this event-loop turn, once `waiting` has closed the
      // oldest past its cap: one evicted at once never costs a stream (and a connection to
      // the worker's target), and the streams held by waiting connections stay within the cap.
      setImmediate(() => {
        if (socket.destroyed) return;
        // The stream's data listener (the splice) and this one both see the first byte.
        socket.once('data', ticket.leave);
        stream = this.open(socket);
      });
      return;
    }
    // A client that ends without a byte is gone: nothing to relay.
    const ended = (): void => void socket.destroy();
    socket.once('end', ended);
    socket.once('data', (first: Buffer) => {
      ticket.leave();
      socket.off('end', ended);
      socket.pause();
      this.open(socket, first);
    });
  }

  /**
   * Opens the stream for `socket` (whose `first` bytes were read already) and splices them;
   * returns it (none when no tunnel is up).
   */
  private open(socket: Socket, first?: Buffer): TunnelStream | undefined {
    const { pool, target, http, log } = this.opts;
    const session = pool.pick();
    const isHttp = http && first !== undefined && HTTP_REQUEST.test(first.toString('latin1', 0, 8));
    if (!session) {
      // No tunnel is up: an immediate answer, never a hang. An HTTP client is told why.
      this.opts.refused('no tunnel');
      log.debug({ target }, 'connection refused: no tunnel up');
      if (isHttp)
        answer(
          socket,
          '503 Service Unavailable',
          `no tunnel to a worker is up (${pool.whyDown()})`,
        );
      else socket.destroy();
      return undefined;
    }
    const stream = session.openStream(target);
    let answering = false;
    stream.on('error', (err: Error & { reason?: string }) => {
      // Nothing came back from the worker yet: an HTTP client gets a status and the reason.
      if (isHttp && !socket.destroyed && socket.bytesWritten === 0) {
        answering = true;
        const reason = err.reason ?? 'stream error';
        if (reason === 'too many streams' || reason === 'unknown target') {
          this.opts.refused('stream refused');
          return answer(
            socket,
            '503 Service Unavailable',
            `the worker refused the connection: ${reason}`,
          );
        }
        return answer(
          socket,
          '502 Bad Gateway',
          `the tunnel ended before the worker answered: ${reason}`,
        );
      }
      socket.destroy();
    });
    // A client that breaks its connection resets the stream; one that closes it in good order
    // ends it (splice: FIN both ways).
    socket.on('error', () => stream.reset('client error'));
    let workerEnded = false;
    socket.setTimeout(this.idleMs, () => {
      if (workerEnded) {
        log.debug({ target }, 'client did not close after the worker ended: closed');
        stream.reset('client did not close');
      } else {
        this.opts.refused('idle timeout');
        stream.reset('idle timeout');
      }
      socket.destroy();
    });
    // The worker ended its side and all of it reached the kernel (the socket's 'finish': a
    // client that reads slowly is not cut short): from now on FIN_WAIT_MS of silence closes it.
    socket.once('finish', () => {
      workerEnded = true;
      socket.setTimeout(this.finWaitMs);
    });
    if (first) stream.write(first);
    // An HTTP answer in progress (above) is not cut short when the stream ends.
    splice(stream, socket, { socketClosed: 'client closed', keepSocket: () => answering });
    return stream;
  }
}
