import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { Logger, RelayConfig } from '../../../libs/config/src';
import {
  listenTunnel,
  splice,
  TunnelDialer,
  type KeyRing,
  type TunnelListener,
  type TunnelMetrics,
  type TunnelSession,
  type TunnelStream,
} from '../../../libs/tunnel/src';
import type { TunnelView } from './relay.state';

/** The target every relayed connection asks for: the worker's job API (API_LISTEN). */
export const API_TARGET = 'api';

interface Entry {
  url: string;
  dialer?: TunnelDialer;
  session?: TunnelSession;
  since?: Date;
  lastError?: string;
}

/**
 * The relay's tunnels: one dialer per TUNNEL_CONNECT URL, plus the sessions workers open to
 * TUNNEL_LISTEN in reverse mode. A new stream goes to the authenticated session with the fewest
 * open streams; a session that closes is dropped from the choice at once.
 */
export class TunnelPool {
  private readonly entries: Entry[] = [];
  private listener?: TunnelListener;

  constructor(
    private readonly config: RelayConfig,
    private keys: KeyRing,
    private readonly log: Logger,
    private readonly metrics: TunnelMetrics,
  ) {}

  async start(): Promise<void> {
    for (const url of this.config.tunnelConnect) {
      const entry: Entry = { url };
      entry.dialer = new TunnelDialer({
        url,
        keys: this.keys,
        logger: this.log,
        metrics: this.metrics,
        proxy: this.config.httpsProxy,
        onSession: (s) => this.attach(entry, s),
      });
      this.entries.push(entry);
      entry.dialer.start();
    }
    if (this.config.tunnelListen) {
      const { host, port } = this.config.tunnelListen;
      const tls = this.config.tls && {
        cert: readFileSync(this.config.tls.certFile),
        key: readFileSync(this.config.tls.keyFile),
      };
      this.listener = await listenTunnel({
        host,
        port,
        keys: this.keys,
        tls,
        logger: this.log,
        metrics: this.metrics,
        onSession: (s) => {
          const entry: Entry = { url: `reverse:${s.peer}` };
          this.entries.push(entry);
          this.attach(entry, s, true);
        },
      });
    }
  }

  private attach(entry: Entry, session: TunnelSession, transient = false): void {
    entry.session = session;
    entry.since = new Date();
    // Nothing is served to the worker: the relay only opens streams. A stream the peer tries
    // to open is refused by the session's default (no 'stream' consumer resets it).
    session.on('stream', (_target: string, stream: { reset?: (r: string) => void }) =>
      stream.reset?.('relay serves no targets'),
    );
    session.once('close', (reason: string) => {
      entry.session = undefined;
      entry.lastError = reason;
      if (transient) this.entries.splice(this.entries.indexOf(entry), 1);
    });
  }

  /** The healthy session with the fewest open streams, if any. */
  pick(): TunnelSession | undefined {
    let best: TunnelSession | undefined;
    for (const e of this.entries) {
      const s = e.session;
      if (s && !s.closeReason && (!best || s.openStreams < best.openStreams)) best = s;
    }
    return best;
  }

  /** Carries one accepted TCP connection to the worker's API; false when no tunnel is up. */
  relay(socket: Socket): boolean {
    const session = this.pick();
    if (!session) return false;
    socket.setNoDelay(true);
    const stream = session.openStream(API_TARGET) as TunnelStream;
    stream.on('error', () => socket.destroy());
    socket.on('error', () => stream.destroy());
    splice(stream, socket);
    return true;
  }

  /** SIGHUP: new keys for the next handshakes; sessions up stay up. */
  setKeys(keys: KeyRing): void {
    this.keys = keys;
    for (const e of this.entries) e.dialer?.setKeys(keys);
    this.listener?.setKeys(keys);
  }

  views(): TunnelView[] {
    return this.entries.map((e) => ({
      url: e.url,
      state: e.session && !e.session.closeReason ? 'up' : e.lastError ? 'down' : 'connecting',
      streams: e.session?.openStreams ?? 0,
      rttMs: e.session?.rttMs,
      since: e.session ? e.since?.toISOString() : undefined,
      lastError: e.lastError,
    }));
  }

  async close(): Promise<void> {
    const settle = async (p?: Promise<unknown>) => {
      await p;
    };
    await Promise.all(this.entries.map((e) => settle(e.dialer?.stop())));
    await this.listener?.close();
    await Promise.all(this.entries.map((e) => settle(e.session?.close('relay stopping'))));
  }
}
