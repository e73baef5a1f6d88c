import { readFileSync } from 'node:fs';
import { redactUrl, type Logger, type RelayConfig } from '../../../libs/config/src';
import {
  listenTunnel,
  loadKeyRing,
  logKeyWarnings,
  TunnelDialer,
  type KeyRing,
  type TunnelListener,
  type TunnelMetrics,
  type TunnelSession,
} from '../../../libs/tunnel/src';
import type { TunnelView } from './relay.state';

/** The target every relayed connection asks for: the worker's job API (API_LISTEN). */
export const API_TARGET = 'api';

interface Entry {
  url: string;
  dialer?: TunnelDialer;
  session?: TunnelSession;
  sessionId?: number;
  /** When the entry entered its current state. */
  since: Date;
  lastError?: string;
}

/**
 * The relay's tunnels: one dialer per TUNNEL_CONNECT URL, plus the sessions workers open to
 * TUNNEL_LISTEN in reverse mode. A new stream goes to the authenticated session with the fewest
 * open streams. A session leaves the choice the moment it ends: its socket closing (a killed
 * worker's kernel sends FIN or RST at once), an authenticated CLOSE, or a ping timeout for a
 * peer that vanished without a word.
 */
export class TunnelPool {
  private readonly entries: Entry[] = [];
  private listener?: TunnelListener;
  private sessions = 0;

  constructor(
    private readonly config: RelayConfig,
    private keys: KeyRing,
    private readonly log: Logger,
    private readonly metrics: TunnelMetrics,
  ) {}

  async start(): Promise<void> {
    logKeyWarnings(this.keys, this.log);
    for (const url of this.config.tunnelConnect) {
      const entry: Entry = { url, since: new Date() };
      entry.dialer = new TunnelDialer({
        url,
        keys: this.keys,
        logger: this.log,
        metrics: this.metrics,
        proxy: this.config.httpsProxy,
        onSession: (s) => this.attach(entry, s),
        onFailure: (detail) => {
          if (entry.lastError === undefined) entry.since = new Date();
          entry.lastError = detail;
        },
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
          const entry: Entry = { url: `reverse:${s.peer}`, since: new Date() };
          this.entries.push(entry);
          this.attach(entry, s, true);
        },
      });
      this.log.info({ tunnel: this.listener.address(), tls: Boolean(tls) }, 'accepting tunnels');
    }
  }

  private attach(entry: Entry, session: TunnelSession, transient = false): void {
    entry.session = session;
    entry.sessionId = ++this.sessions;
    entry.since = new Date();
    entry.lastError = undefined;
    // Nothing is served to the worker: the relay only opens streams. A stream the peer tries
    // to open is refused by the session's default (no 'stream' consumer resets it).
    session.once('close', (reason: string) => {
      entry.session = undefined;
      entry.sessionId = undefined;
      entry.since = new Date();
      entry.lastError = reason;
      // A reverse session's entry goes with it: the worker dials again and gets a new one.
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

  /** Why no tunnel is up, in one line: each tunnel's URL and its last error (or state). */
  whyDown(): string {
    const views = this.views();
    if (views.length === 0) return 'no worker has dialed TUNNEL_LISTEN';
    return views.map((v) => `${v.url}: ${v.lastError ?? v.state}`).join('; ');
  }

  /** SIGHUP: new keys for the next handshakes; sessions up stay up. */
  setKeys(keys: KeyRing): void {
    this.keys = keys;
    for (const e of this.entries) e.dialer?.setKeys(keys);
    this.listener?.setKeys(keys);
  }

  /**
   * Loads TUNNEL_KEY_FILE again and uses it from the next handshake on. A file that cannot be
   * used throws before anything changes, so the keys in use stay in force.
   */
  async reload(keyFiles: readonly string[]): Promise<void> {
    const ring = await loadKeyRing(keyFiles);
    logKeyWarnings(ring, this.log);
    this.setKeys(ring);
    this.log.info({ keys: ring.fingerprints }, 'tunnel key ring loaded');
  }

  views(): TunnelView[] {
    return this.entries.map((e) => {
      const up = e.session !== undefined && !e.session.closeReason;
      return {
        url: redactUrl(e.url),
        state: up ? 'up' : e.lastError !== undefined ? 'down' : 'connecting',
        session: up ? e.sessionId : undefined,
        streams: e.session?.openStreams ?? 0,
        rttMs: up ? e.session?.rttMs : undefined,
        since: e.since.toISOString(),
        lastError: e.lastError,
      };
    });
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
