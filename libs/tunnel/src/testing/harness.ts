import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { silentLogger } from '../../../config/src';
import { TunnelDialer, type TunnelDialerOptions } from '../dial';
import { KeyRing } from '../keys';
import { listenTunnel, type ListenTunnelOptions, type TunnelListener } from '../listen';
import type { TunnelMetrics } from '../metrics';
import type { TunnelSession } from '../session';
import { initiate } from '../handshake-driver';
import type { SessionKeys } from '../protocol';
import type { MessageChannel } from '../transport/channel';
import { dialWebSocket } from '../transport/ws-adapter';

/** Test helpers for tunnel tests: real loopback sockets, counted metrics. Not for production. */

/** A random in-memory key ring. */
export function randomRing(n = 1): KeyRing {
  return KeyRing.fromSecrets(Array.from({ length: n }, () => randomBytes(32)));
}

/** TunnelMetrics that counts every call by `name` or `name:reason`. */
export class CountingMetrics implements TunnelMetrics {
  readonly counts = new Map<string, number>();
  readonly rtts: number[] = [];
  count(key: string): number {
    return this.counts.get(key) ?? 0;
  }
  private inc(key: string, n = 1): void {
    this.counts.set(key, this.count(key) + n);
  }
  handshake(result: 'ok' | 'failed', reason?: string): void {
    this.inc(reason ? `handshake:${result}:${reason}` : `handshake:${result}`);
  }
  frameRejected(reason: string): void {
    this.inc(`frameRejected:${reason}`);
  }
  bytes(direction: 'in' | 'out', n: number): void {
    this.inc(`bytes:${direction}`, n);
  }
  streamOpened(): void {
    this.inc('streamOpened');
  }
  streamClosed(): void {
    this.inc('streamClosed');
  }
  streamRefused(reason: string): void {
    this.inc(`streamRefused:${reason}`);
  }
  rtt(seconds: number): void {
    this.rtts.push(seconds);
  }
  reconnect(): void {
    this.inc('reconnect');
  }
  sessionUp(): void {
    this.inc('sessionUp');
  }
  sessionDown(_peer: string, reason: string): void {
    this.inc(`sessionDown:${reason}`);
  }
}

/** A TCP server on 127.0.0.1 that echoes, or runs `handle`; records every connection. */
export async function tcpServer(
  handle: (s: Socket) => void = (s) => s.pipe(s),
): Promise<{ port: number; connections: number; server: Server; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const result = {
    port: 0,
    connections: 0,
    server: createServer({ allowHalfOpen: true }),
    close: async () => {},
  };
  result.server.on('connection', (s: Socket) => {
    result.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    handle(s);
  });
  await new Promise<void>((r) => result.server.listen(0, '127.0.0.1', r));
  result.port = (result.server.address() as { port: number }).port;
  result.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      result.server.close(() => r());
    });
  return result;
}

/** A listener and a dialer connected on loopback, with both sessions. */
export interface Pair {
  listener: TunnelListener;
  dialer: TunnelDialer;
  /** The dialer's session (initiator). */
  client: TunnelSession;
  /** The listener's session (responder). */
  server: TunnelSession;
  listenerMetrics: CountingMetrics;
  dialerMetrics: CountingMetrics;
  close(): Promise<void>;
}

/** Starts a listener on a random loopback port and a dialer to it; resolves once both sessions are up. */
export async function tunnelPair(over: PairOverrides = {}): Promise<Pair> {
  return startPair(randomRing(), over);
}

/** What a test may change in a pair. */
export interface PairOverrides {
  listener?: Partial<ListenTunnelOptions>;
  dialer?: Partial<TunnelDialerOptions>;
  onServer?: (s: TunnelSession) => void;
}

/** Like tunnelPair, with a given key ring on both sides (overridable per side). */
export async function startPair(keys: KeyRing, over: PairOverrides = {}): Promise<Pair> {
  const logger = silentLogger();
  const listenerMetrics = new CountingMetrics();
  const dialerMetrics = new CountingMetrics();
  let gotServer!: (s: TunnelSession) => void;
  let gotClient!: (s: TunnelSession) => void;
  const server = new Promise<TunnelSession>((r) => (gotServer = r));
  const client = new Promise<TunnelSession>((r) => (gotClient = r));
  const listener = await listenTunnel({
    host: '127.0.0.1',
    port: 0,
    keys,
    logger,
    metrics: listenerMetrics,
    onSession: (s) => {
      over.onServer?.(s);
      gotServer(s);
    },
    ...over.listener,
  });
  const dialer = new TunnelDialer({
    url: `ws://127.0.0.1:${listener.address().port}/`,
    keys,
    logger,
    metrics: dialerMetrics,
    onSession: gotClient,
    backoff: { initialMs: 20, maxMs: 200 },
    ...over.dialer,
  });
  dialer.start();
  const [c, s] = await Promise.all([client, server]);
  return {
    listener,
    dialer,
    client: c,
    server: s,
    listenerMetrics,
    dialerMetrics,
    close: async () => {
      await dialer.stop();
      await listener.close();
    },
  };
}

/** Polls `check` until it is true (or fails after `ms`). */
export async function waitFor(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * A hand-driven initiator for attack tests: a real WebSocket and a real handshake, then the
 * caller seals (and mangles) frames itself.
 */
export async function rawPeer(
  url: string,
  authKey: Buffer,
): Promise<{ channel: MessageChannel; keys: SessionKeys; closed: Promise<string> }> {
  const channel = await dialWebSocket(url, { timeoutMs: 2000 }).channel;
  const keys = await initiate(channel, authKey);
  const closed = new Promise<string>((r) => channel.setCloseHandler(r));
  channel.setMessageHandler(() => undefined);
  return { channel, keys, closed };
}

/**
 * A self-signed certificate for localhost and 127.0.0.1 (openssl), written in `dir`: the files,
 * and their contents.
 */
export function selfSignedCert(dir: string): {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
} {
  const [certFile, keyFile] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { stdio: 'ignore' },
  );
  return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
}
