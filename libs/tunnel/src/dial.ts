import type { Agent } from 'node:http';
import { redactUrl, type Logger } from '../../config/src';
import { HandshakeError, initiate } from './handshake-driver';
import type { KeyRing } from './keys';
import { noopTunnelMetrics, type TunnelMetrics } from './metrics';
import { HANDSHAKE_TIMEOUT_MS } from './protocol';
import { TunnelSession, type SessionOptions } from './session';
import { Backoff, type BackoffOptions } from './backoff';
import { proxyAgent } from './transport/proxy';
import { dialWebSocket } from './transport/ws-adapter';

/** Options of `TunnelDialer`. */
export interface TunnelDialerOptions {
  /** `ws://host:port/` or `wss://host:port/`. */
  url: string;
  keys: KeyRing;
  logger: Logger;
  metrics?: TunnelMetrics;
  /** Called for each authenticated session (once per successful connection). */
  onSession(session: TunnelSession): void;
  /** Called when a connection attempt fails, with what went wrong (for `/healthz`). */
  onFailure?(detail: string): void;
  /** HTTP CONNECT proxy URL (HTTPS_PROXY), e.g. `http://proxy:3128`. */
  proxy?: string;
  backoff?: Partial<BackoffOptions>;
  /** Extra CA for wss:// with a private certificate. */
  tlsCa?: Buffer;
  rejectUnauthorized?: boolean;
  handshakeTimeoutMs?: number;
  pingIntervalMs?: SessionOptions['pingIntervalMs'];
  maxStreams?: SessionOptions['maxStreams'];
}

/**
 * Keeps one tunnel session to `url` up: dials, authenticates with the ring's first key, and
 * after any failure or loss dials again after a capped, jittered backoff that resets only once
 * a session stayed up `stableMs`. It never gives up; `stop()` cancels it.
 */
export class TunnelDialer {
  private keys: KeyRing;
  private running = false;
  private session?: TunnelSession;
  private cancelDial?: () => void;
  private wake?: () => void;
  private loop?: Promise<void>;
  private readonly backoff: Backoff;
  private readonly metrics: TunnelMetrics;
  private readonly agent?: Agent;
  /** The URL as logged: a `user:password@` in it is never written out. */
  private readonly shown: string;

  constructor(private readonly opts: TunnelDialerOptions) {
    this.shown = redactUrl(opts.url);
    this.keys = opts.keys;
    this.backoff = new Backoff(opts.backoff);
    this.metrics = opts.metrics ?? noopTunnelMetrics;
    this.agent = opts.proxy
      ? proxyAgent(opts.proxy, opts.url, opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS)
      : undefined;
  }

  /** Starts dialing (idempotent). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Stops: cancels a dial or a wait, closes the session, and resolves once all is quiet. */
  async stop(): Promise<void> {
    this.running = false;
    this.cancelDial?.();
    this.wake?.();
    await this.session?.close('dialer stopping');
    await this.loop;
  }

  /** Uses these keys from the next connection on (SIGHUP reload). */
  setKeys(keys: KeyRing): void {
    this.keys = keys;
  }

  /** The session up now, if any (never one that has ended). */
  get current(): TunnelSession | undefined {
    return this.session?.closeReason === undefined ? this.session : undefined;
  }

  private async run(): Promise<void> {
    let first = true;
    while (this.running) {
      if (!first) this.metrics.reconnect();
      first = false;
      const session = await this.connect();
      if (session) {
        const upAt = performance.now();
        this.session = session;
        // `closed`, not a 'close' listener: a session can end inside its constructor.
        const reason = await session.closed;
        this.session = undefined;
        this.backoff.sessionEnded(performance.now() - upAt);
        this.opts.logger.warn({ url: this.shown, reason }, 'tunnel session lost, reconnecting');
      }
      if (this.running) await this.sleep(this.backoff.next());
    }
  }

  private async connect(): Promise<TunnelSession | undefined> {
    const { url, logger } = this.opts;
    const timeoutMs = this.opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    const dial = dialWebSocket(url, {
      timeoutMs,
      agent: this.agent,
      ca: this.opts.tlsCa,
      rejectUnauthorized: this.opts.rejectUnauthorized,
    });
    this.cancelDial = dial.cancel;
    try {
      const channel = await dial.channel;
      if (!this.running) channel.terminate();
      const keys = await initiate(channel, this.keys.primary.authKey, timeoutMs);
      this.metrics.handshake('ok');
      const session = new TunnelSession(channel, keys, {
        initiator: true,
        logger,
        metrics: this.metrics,
        pingIntervalMs: this.opts.pingIntervalMs,
        maxStreams: this.opts.maxStreams,
      });
      logger.info({ url: this.shown, key: this.keys.primary.fingerprint }, 'tunnel session up');
      this.opts.onSession(session);
      return session;
    } catch (err) {
      const { reason, detail } = dialFailure(err);
      if (this.running) {
        logger.warn({ url: this.shown, reason, detail }, 'tunnel connection failed');
        this.metrics.handshake('failed', reason);
        this.opts.onFailure?.(detail);
      }
      return undefined;
    } finally {
      this.cancelDial = undefined;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}

/**
 * Why a dial failed: `reason` is a fixed string (a metrics label, so its cardinality stays
 * bounded: docs/PROTOCOL.md section 5), `detail` the full message for logs and `/healthz`.
 */
export function dialFailure(err: unknown): { reason: string; detail: string } {
  if (err instanceof HandshakeError) return { reason: err.reason, detail: err.reason };
  const e = err as NodeJS.ErrnoException;
  const detail = e?.message ?? String(err);
  const code = e?.code ?? '';
  if (/CERT|SELF_SIGNED|ERR_TLS|ERR_SSL|HOSTNAME/.test(code))
    return { reason: 'tls error', detail };
  if (/^Unexpected server response/.test(detail)) return { reason: 'upgrade refused', detail };
  if (/refused CONNECT|proxy/.test(detail)) return { reason: 'proxy refused', detail };
  return { reason: 'connect failed', detail };
}
