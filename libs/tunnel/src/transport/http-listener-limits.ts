import type { IncomingMessage, Server } from 'node:http';
import { Socket } from 'node:net';
import { Admission } from './admission';
import { withinFileLimit } from './fd-limit';

/** Bounds on one HTTP listener's connections (boundHttpListener). */
export interface HttpListenerLimits {
  /** Connections at most (within `fileShare` of the descriptor limit); past it Node closes newcomers. */
  maxConnections: number;
  /** The share of the descriptor limit `maxConnections` may take. */
  fileShare: number;
  /** Connections that have not sent a whole request head yet, at most. */
  maxWaiting: number;
  /** A connection whose first request head has not arrived within this is closed. */
  firstRequestMs?: number;
}

/** As the relay's own listeners: a client that connects and says nothing for 10 s is closed. */
export const FIRST_REQUEST_TIMEOUT_MS = 10_000;

/**
 * Bounds the TCP connections of an HTTP server (the relay's ADMIN_LISTEN, the worker's
 * API_LISTEN) the way the relay bounds its client listeners. Node's HTTP server times out a
 * request whose head is slow (headersTimeout) but never a connection that sends nothing at
 * all, and sets no cap: a local process opening silent connections kept each one for ever,
 * until the daemon ran out of descriptors and every accept and file open failed (EMFILE),
 * those of the tunnel and the other listeners included.
 *
 * - `maxConnections` (within `fileShare` of the descriptor limit): past it a newcomer is closed
 *   at once, before the process runs out of descriptors;
 * - a connection must deliver its first request head within `firstRequestMs` (10 s), else it
 *   is closed; until then it is one of at most `maxWaiting`, past which the oldest of the
 *   address holding the most is closed, never the newcomer (Admission: a flood evicts itself).
 *   After its first request a connection is the HTTP server's, whose keep-alive and request
 *   timeouts apply as before.
 *
 * Streams the tunnel hands to the same server (the worker's `api` target emits them as
 * 'connection') are not TCP sockets and are left alone: the tunnel bounds those.
 */
export function boundHttpListener(server: Server, limits: HttpListenerLimits): void {
  server.maxConnections = withinFileLimit(limits.maxConnections, limits.fileShare);
  const waiting = new Admission(limits.maxWaiting);
  const firstRequestMs = limits.firstRequestMs ?? FIRST_REQUEST_TIMEOUT_MS;
  const spoke = new WeakMap<Socket, () => void>();
  server.on('connection', (socket: Socket) => {
    if (!(socket instanceof Socket) || socket.remoteAddress === undefined) return;
    const ticket = waiting.admitUntil(socket.remoteAddress, firstRequestMs, () => {
      spoke.delete(socket);
      socket.destroy();
    });
    const done = (): void => {
      ticket.leave();
      spoke.delete(socket);
    };
    spoke.set(socket, done);
    socket.once('close', done);
  });
  // (No 'upgrade' listener: adding one would take upgrades from the server's own handling.)
  server.on('request', (req: IncomingMessage) => spoke.get(req.socket)?.());
}
