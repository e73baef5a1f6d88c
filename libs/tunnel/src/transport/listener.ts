import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Admission } from './admission';
import type { MessageChannel } from './channel';
import { offersVersion, remoteOf, UpgradeAcceptor } from './ws-adapter';

/** Where and how to accept WebSocket connections. */
export interface WsListenerOptions {
  host: string;
  port: number;
  /** Serve wss:// with this certificate. */
  tls?: { cert: Buffer; key: Buffer };
  /**
   * The one deadline of a connection (ms): from the TCP accept until it is authenticated
   * (`PendingChannel.authenticated`), whatever it is doing meanwhile (TLS, the upgrade
   * request, the handshake). Default 5 000, HANDSHAKE_TIMEOUT_MS.
   */
  deadlineMs?: number;
  /** Unauthenticated connections held at once; past it the oldest of the busiest address goes. */
  maxPending: number;
  /** Open connections at most, sessions included; past it new ones are dropped at once. */
  maxConnections: number;
  /** An accepted, upgraded, not yet authenticated connection. */
  onChannel(pending: PendingChannel): void;
  /**
   * A connection dropped before it became a channel: `unsupported version` (answered 400),
   * `timeout` or `evicted`. Reasons are fixed strings (metric labels).
   */
  onDropped(reason: string, peer: string): void;
}

/** An upgraded connection whose handshake has to run now. */
export interface PendingChannel {
  channel: MessageChannel;
  /** Aborted, with the reason `timeout` or `evicted`, when the connection must go. */
  signal: AbortSignal;
  /** The handshake succeeded: the connection leaves the pending set and its deadline. */
  authenticated(): void;
}

/** A bound WebSocket listener. */
export interface WsListener {
  address(): AddressInfo;
  /** Unauthenticated connections held now. */
  readonly pending: number;
  close(): Promise<void>;
}

/** One accepted connection until it is authenticated or gone. */
interface Conn {
  /** The socket the HTTP layer reads: the TCP socket, or the TLS socket once TLS is up. */
  top: Duplex;
  /** Set once upgraded: aborting it ends the handshake. */
  controller?: AbortController;
  /** Refused with an HTTP answer: it is closing, nothing more to report. */
  answered?: boolean;
  /** Leaves the pending set and stops the deadline (idempotent). */
  release(): void;
}

/**
 * Answers a refused upgrade and closes the socket once the answer is written: a refused peer
 * that keeps its side open never holds a descriptor (it used to, until the process ended).
 */
function refuse(socket: Duplex, status: string): void {
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () =>
    socket.destroy(),
  );
}

/**
 * Starts an HTTP(S) server whose upgrades become channels. A plain `GET /health` answers `ok`;
 * an upgrade without `gpu-sidecar.v1` gets 400, before ws sees it.
 *
 * Every accepted socket is pending from its accept until the handshake succeeded: it has one
 * deadline (`deadlineMs` from the accept, not one per stage), and it counts in one Admission
 * of `maxPending`, which never refuses a newcomer but evicts the oldest connection of the
 * address holding the most (admission.ts says why a flood cannot lock a peer out that way).
 */
export async function listenWebSocket(opts: WsListenerOptions): Promise<WsListener> {
  const deadlineMs = opts.deadlineMs ?? 5_000;
  const server: Server = opts.tls
    ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key, handshakeTimeout: deadlineMs })
    : createHttpServer();
  server.maxConnections = opts.maxConnections;
  const acceptor = new UpgradeAcceptor();
  const admission = new Admission(opts.maxPending);
  const conns = new Map<string, Conn>();
  const sockets = new Set<Socket>();

  /**
   * The deadline passed or the connection was evicted: drop it, through its handshake if any
   * (which reports it). The socket is destroyed in every case: a handshake that already failed
   * (M2 with no key: a close frame waiting for the peer's answer) ignores the abort, and the
   * connection must not outlive its place in the pending set.
   */
  const drop = (conn: Conn, peer: string, reason: 'timeout' | 'evicted'): void => {
    conn.release();
    if (conn.controller) conn.controller.abort(reason);
    else if (!conn.answered) opts.onDropped(reason, peer);
    conn.top.destroy();
  };

  server.on('connection', (raw: Socket) => {
    sockets.add(raw);
    const peer = `${raw.remoteAddress ?? '?'}:${raw.remotePort ?? '?'}`;
    const ticket = admission.admitUntil(raw.remoteAddress ?? '?', deadlineMs, (why) =>
      drop(conn, peer, why),
    );
    const conn: Conn = { top: raw, release: ticket.leave };
    conns.set(peer, conn);
    raw.once('close', () => {
      sockets.delete(raw);
      conn.release();
      if (conns.get(peer) === conn) conns.delete(peer);
    });
  });
  if (opts.tls) {
    server.on('secureConnection', (s: Duplex & { remoteAddress?: string; remotePort?: number }) => {
      const conn = conns.get(`${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`);
      if (conn) conn.top = s;
    });
  }
  server.on('request', (req: IncomingMessage, res) => {
    const ok = req.method === 'GET' && req.url === '/health';
    res
      .writeHead(ok ? 200 : 426, { 'content-type': 'text/plain', connection: 'close' })
      .end(ok ? 'ok\n' : 'tunnel endpoint\n');
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const peer = remoteOf(req);
    const conn = conns.get(peer);
    if (!conn) return socket.destroy(); // already evicted or timed out
    if (!offersVersion(req)) {
      // Still pending until closed: a peer that never reads the answer meets the deadline.
      conn.answered = true;
      opts.onDropped('unsupported version', peer);
      return refuse(socket, '400 Bad Request');
    }
    const controller = (conn.controller = new AbortController());
    acceptor.accept(req, socket, head, (channel) =>
      opts.onChannel({ channel, signal: controller.signal, authenticated: conn.release }),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // A listen queue as deep as the connections we may hold (the kernel caps it at somaxconn,
    // 4,096 on current Linux): with Node's 511, a flood that keeps more connection attempts in
    // flight fills the queue, and the kernel drops the next SYN, a legitimate peer's too, which
    // then waits for TCP's retransmission (1 s, then 3 s, 7 s after its first try).
    server.listen({ port: opts.port, host: opts.host, backlog: opts.maxConnections }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    address: () => server.address() as AddressInfo,
    get pending() {
      return admission.size;
    },
    close: () =>
      new Promise<void>((resolve) => {
        acceptor.close();
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
