import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { MessageChannel } from './channel';
import { offersVersion, remoteOf, UpgradeAcceptor } from './ws-adapter';

/** Where and how to accept WebSocket connections. */
export interface WsListenerOptions {
  host: string;
  port: number;
  /** Serve wss:// with this certificate. */
  tls?: { cert: Buffer; key: Buffer };
  /**
   * A connection that has not asked for the upgrade within this time is closed (ms; default
   * 5 000, the handshake timeout): silent or slow-header connections never hold a descriptor.
   */
  preUpgradeTimeoutMs?: number;
  /** Open connections at most, sessions included; past it new ones are dropped at once. */
  maxConnections?: number;
  /** Admits a new connection or names why not (e.g. 'too many pending'). */
  admit(): string | undefined;
  /** An accepted, not yet authenticated connection. */
  onChannel(channel: MessageChannel): void;
  /** An upgrade refused before any WebSocket existed. */
  onRefused(reason: string, peer: string): void;
}

/** A bound WebSocket listener. */
export interface WsListener {
  address(): AddressInfo;
  close(): Promise<void>;
}

function refuse(socket: Duplex, status: string): void {
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

/**
 * Starts an HTTP(S) server whose upgrades become channels. A plain `GET /health` answers `ok`;
 * an upgrade without `gpu-sidecar.v1` gets 400, one over the pending cap 503, before ws sees it.
 */
export async function listenWebSocket(opts: WsListenerOptions): Promise<WsListener> {
  const preUpgradeMs = opts.preUpgradeTimeoutMs ?? 5_000;
  // The pending-handshake cap (listen.ts) only sees connections that became WebSockets. A flood
  // of TCP (or TLS) connections that never send a request would otherwise sit until Node's own
  // timeouts (minutes; headersTimeout does not fire on a connection that sent nothing), one
  // descriptor each. So: the TLS handshake and the upgrade request must each come within
  // `preUpgradeMs`, and the server holds at most `maxConnections` sockets.
  const server: Server = opts.tls
    ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key, handshakeTimeout: preUpgradeMs })
    : createHttpServer();
  server.maxConnections = opts.maxConnections ?? 1024;
  const acceptor = new UpgradeAcceptor();
  // The socket the HTTP layer sees: the TCP socket, or the TLS socket once TLS is up.
  const upgraded = new WeakSet<Duplex>();
  server.on(opts.tls ? 'secureConnection' : 'connection', (s: Duplex) => {
    const timer = setTimeout(() => {
      if (!upgraded.has(s)) s.destroy();
    }, preUpgradeMs);
    timer.unref();
    s.once('close', () => clearTimeout(timer));
  });
  server.on('request', (req: IncomingMessage, res) => {
    const ok = req.method === 'GET' && req.url === '/health';
    res
      .writeHead(ok ? 200 : 426, { 'content-type': 'text/plain' })
      .end(ok ? 'ok\n' : 'tunnel endpoint\n');
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgraded.add(socket); // from here the handshake timeout (listen.ts) bounds it
    socket.on('error', () => socket.destroy());
    if (!offersVersion(req)) {
      opts.onRefused('unsupported version', remoteOf(req));
      return refuse(socket, '400 Bad Request');
    }
    const why = opts.admit();
    if (why) {
      opts.onRefused(why, remoteOf(req));
      return refuse(socket, '503 Service Unavailable');
    }
    acceptor.accept(req, socket, head, opts.onChannel);
  });
  const connections = new Set<Duplex>();
  server.on('connection', (s: Duplex) => {
    connections.add(s);
    s.once('close', () => connections.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    address: () => server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        acceptor.close();
        server.close(() => resolve());
        for (const s of connections) s.destroy();
      }),
  };
}
