import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { redactUrl, type Logger } from '../../config/src';
import { TunnelDialer, type TunnelDialerOptions } from './dial';
import { loadKeyRing, logKeyWarnings, type KeyRing } from './keys';
import { listenTunnel, type ListenTunnelOptions, type TunnelListener } from './listen';
import type { TunnelMetrics } from './metrics';
import { frameCipherImplementation } from './protocol/native-gcm';
import type { TunnelSession } from './session';

/**
 * What the endpoint reads of a daemon's configuration (docs/ARCHITECTURE.md, "Configuration"):
 * RelayConfig and WorkerConfig both have it.
 */
export interface TunnelEndpointConfig {
  /** TUNNEL_KEY_FILE: the first key dials, any one authenticates. */
  readonly keyFiles: readonly string[];
  /** TUNNEL_LISTEN: accept tunnels here. */
  readonly tunnelListen?: { readonly host: string; readonly port: number };
  /** TUNNEL_CONNECT: keep one tunnel up to each URL. */
  readonly tunnelConnect: readonly string[];
  /** TUNNEL_TLS_CERT, TUNNEL_TLS_KEY: serve wss:// on TUNNEL_LISTEN. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
  /** HTTPS_PROXY: dial through an HTTP CONNECT proxy. */
  readonly httpsProxy?: string;
}

/** Options of `TunnelEndpoint.start`. */
export interface TunnelEndpointOptions {
  config: TunnelEndpointConfig;
  logger: Logger;
  metrics?: TunnelMetrics;
  /**
   * Called for each authenticated session, dialed or accepted, as it comes up: the worker
   * serves its targets on it. A session nobody serves refuses the streams its peer opens.
   */
  onSession?(session: TunnelSession): void;
  /** Dialer settings no variable sets (tests): backoff, a private CA for wss://, deadlines. */
  dialer?: Partial<
    Pick<
      TunnelDialerOptions,
      'backoff' | 'tlsCa' | 'rejectUnauthorized' | 'handshakeTimeoutMs' | 'pingIntervalMs'
    >
  >;
  /** Listener settings no variable sets (tests). */
  listener?: Partial<Pick<ListenTunnelOptions, 'handshakeTimeoutMs' | 'pingIntervalMs'>>;
}

/** One tunnel of an endpoint, as the relay's `/healthz` shows it. */
export interface TunnelView {
  /** TUNNEL_CONNECT URL (redacted), or `reverse:host:port` for a peer that dialed TUNNEL_LISTEN. */
  url: string;
  state: 'connecting' | 'up' | 'down';
  /** This endpoint's number for the session up now: it changes when the tunnel reconnects. */
  session?: number;
  streams: number;
  rttMs?: number;
  /** When the tunnel entered its current state. */
  since?: string;
  /** Why the last session ended or the last attempt failed. */
  lastError?: string;
}

/** One tunnel: a dialer's (it lives as long as the endpoint) or an accepted session's. */
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
 * A daemon's end of its tunnels, the same for relay and worker (either may listen or dial):
 * a listener on TUNNEL_LISTEN (wss:// with TUNNEL_TLS_*) and one dialer per TUNNEL_CONNECT URL
 * (through HTTPS_PROXY), all with one key ring that `reload` replaces (SIGHUP) for the next
 * handshakes while the sessions up keep theirs. It knows each tunnel's state; what a session
 * is used for is the daemon's (`onSession`, `sessions()`).
 *
 * A session leaves `sessions()` the moment it ends: its socket closing (a killed peer's kernel
 * sends FIN or RST at once), an authenticated CLOSE, or a ping timeout for a peer that
 * vanished without a word. An accepted session's tunnel goes with it (the peer dials again and
 * makes a new one); a dialer's stays, `down` with the reason, until its next session.
 */
export class TunnelEndpoint {
  private readonly entries: Entry[] = [];
  private listener?: TunnelListener;
  private sessionCount = 0;

  private constructor(
    private readonly opts: TunnelEndpointOptions,
    private keys: KeyRing,
  ) {}

  /**
   * Loads the key ring (a key file that cannot be used throws here, before anything listens),
   * listens if TUNNEL_LISTEN is set, and starts dialing each TUNNEL_CONNECT URL.
   */
  static async start(opts: TunnelEndpointOptions): Promise<TunnelEndpoint> {
    const keys = await loadKeyRing(opts.config.keyFiles);
    logKeyWarnings(keys, opts.logger);
    // Native where `npm ci` could build it; the same wire either way (docs/PROTOCOL.md, §8).
    opts.logger.info({ implementation: frameCipherImplementation }, 'tunnel frame cipher');
    const endpoint = new TunnelEndpoint(opts, keys);
    await endpoint.listen();
    endpoint.dial();
    return endpoint;
  }

  private async listen(): Promise<void> {
    const { config, logger, metrics } = this.opts;
    if (!config.tunnelListen) return;
    const tls = config.tls && {
      cert: readFileSync(config.tls.certFile),
      key: readFileSync(config.tls.keyFile),
    };
    this.listener = await listenTunnel({
      host: config.tunnelListen.host,
      port: config.tunnelListen.port,
      keys: this.keys,
      tls,
      logger,
      metrics,
      ...this.opts.listener,
      onSession: (s) => {
        const entry: Entry = { url: `reverse:${s.peer}`, since: new Date() };
        this.entries.push(entry);
        this.attach(entry, s, true);
      },
    });
    logger.info({ tunnel: this.listener.address(), tls: Boolean(tls) }, 'accepting tunnels');
  }

  private dial(): void {
    const { config, logger, metrics } = this.opts;
    for (const url of config.tunnelConnect) {
      const entry: Entry = { url, since: new Date() };
      entry.dialer = new TunnelDialer({
        url,
        keys: this.keys,
        logger,
        metrics,
        proxy: config.httpsProxy,
        ...this.opts.dialer,
        onSession: (s) => this.attach(entry, s),
        onFailure: (detail) => {
          if (entry.lastError === undefined) entry.since = new Date();
          entry.lastError = detail;
        },
      });
      this.entries.push(entry);
      entry.dialer.start();
    }
  }

  private attach(entry: Entry, session: TunnelSession, accepted = false): void {
    entry.session = session;
    entry.sessionId = ++this.sessionCount;
    entry.since = new Date();
    entry.lastError = undefined;
    // `closed`, not a 'close' listener: a session can end before it is handed over.
    void session.closed.then((reason) => {
      entry.session = undefined;
      entry.sessionId = undefined;
      entry.since = new Date();
      entry.lastError = reason;
      if (accepted) this.entries.splice(this.entries.indexOf(entry), 1);
    });
    this.opts.onSession?.(session);
  }

  /** Where TUNNEL_LISTEN listens (the port chosen, for port 0), if it does. */
  address(): AddressInfo | undefined {
    return this.listener?.address();
  }

  /** The authenticated sessions up now: the dialers' in TUNNEL_CONNECT order, then accepted ones. */
  sessions(): TunnelSession[] {
    const up: TunnelSession[] = [];
    for (const e of this.entries) if (e.session && !e.session.closeReason) up.push(e.session);
    return up;
  }

  /** Each tunnel: every TUNNEL_CONNECT URL, then each session accepted on TUNNEL_LISTEN. */
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

  /**
   * SIGHUP: loads `keyFiles` (default: TUNNEL_KEY_FILE as started) and uses it from the next
   * handshake on; sessions up keep theirs. A file that cannot be used throws before anything
   * changes, so the keys in use stay in force.
   */
  async reload(keyFiles: readonly string[] = this.opts.config.keyFiles): Promise<void> {
    const ring = await loadKeyRing(keyFiles);
    logKeyWarnings(ring, this.opts.logger);
    this.keys = ring;
    for (const e of this.entries) e.dialer?.setKeys(ring);
    this.listener?.setKeys(ring);
    this.opts.logger.info({ keys: ring.fingerprints }, 'tunnel key ring loaded');
  }

  /**
   * Stops dialing, stops listening, and closes every session with an authenticated CLOSE
   * (`reason` for any the dialers and the listener did not close themselves).
   */
  async close(reason = 'endpoint closing'): Promise<void> {
    await Promise.all(this.entries.flatMap((e) => (e.dialer ? [e.dialer.stop()] : [])));
    await this.listener?.close();
    // A copy: a session that closes takes its accepted entry out of the list at once.
    await Promise.all(
      [...this.entries].flatMap((e) => (e.session ? [e.session.close(reason)] : [])),
    );
  }
}
