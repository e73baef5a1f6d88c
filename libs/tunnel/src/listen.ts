import type { AddressInfo } from 'node:net';
import type { Logger } from '../../config/src/logger';
import { HandshakeError, respond } from './handshake-driver';
import type { KeyRing } from './keys';
import type { SessionKeys } from './protocol';
import { noopTunnelMetrics, type TunnelMetrics } from './metrics';
import { TunnelSession, type SessionOptions } from './session';
import type { MessageChannel } from './transport/channel';
import { listenWebSocket } from './transport/listener';

/** Options of `listenTunnel`. */
export interface ListenTunnelOptions {
  host: string;
  port: number;
  keys: KeyRing;
  /** Serve wss:// (TUNNEL_TLS_CERT, TUNNEL_TLS_KEY). */
  tls?: { cert: Buffer; key: Buffer };
  logger: Logger;
  metrics?: TunnelMetrics;
  /** Called for each authenticated session, never before the handshake succeeded. */
  onSession(session: TunnelSession): void;
  /** Unauthenticated connections allowed at once; more get HTTP 503. Default 64. */
  maxPending?: number;
  handshakeTimeoutMs?: number;
  /** Time a connection has to ask for the upgrade (ms); default the handshake timeout, 5 s. */
  preUpgradeTimeoutMs?: number;
  /** Open connections at most (sessions included); default 1024. */
  maxConnections?: number;
  pingIntervalMs?: SessionOptions['pingIntervalMs'];
  maxStreams?: SessionOptions['maxStreams'];
}

/** A listening tunnel endpoint. */
export interface TunnelListener {
  address(): AddressInfo;
  /** Replaces the key ring for new handshakes (SIGHUP reload); sessions up keep their keys. */
  setKeys(keys: KeyRing): void;
  /** Authenticated sessions up now. */
  readonly sessions: ReadonlySet<TunnelSession>;
  /** Stops listening and closes every session (authenticated CLOSE). */
  close(): Promise<void>;
}

/**
 * Accepts tunnels on host:port. Each connection must finish the handshake with a key of the
 * ring within the timeout; only then is a TunnelSession made and handed to `onSession`. Every
 * refusal is logged with its reason and counted (`metrics.handshake('failed', reason)`).
 */
export async function listenTunnel(opts: ListenTunnelOptions): Promise<TunnelListener> {
  const metrics = opts.metrics ?? noopTunnelMetrics;
  const log = opts.logger;
  const maxPending = opts.maxPending ?? 64;
  let keys = opts.keys;
  let pending = 0;
  const sessions = new Set<TunnelSession>();
  const refused = (reason: string, peer: string): void => {
    log.warn({ peer, reason }, 'tunnel handshake failed');
    metrics.handshake('failed', reason);
  };
  const onChannel = (channel: MessageChannel): void => {
    pending++;
    const ring = keys;
    const up = (sessionKeys: SessionKeys): void => {
      const session = new TunnelSession(channel, sessionKeys, {
        initiator: false,
        logger: log,
        metrics,
        pingIntervalMs: opts.pingIntervalMs,
        maxStreams: opts.maxStreams,
      });
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
      metrics.handshake('ok');
      log.info(
        { peer: channel.peer, key: ring.entries[sessionKeys.keyIndex]?.fingerprint },
        'tunnel session up',
      );
      opts.onSession(session);
    };
    const down = (err: unknown): void =>
      refused(err instanceof HandshakeError ? err.reason : String(err), channel.peer);
    respond(channel, ring.authKeys, opts.handshakeTimeoutMs)
      .then(up, down)
      .finally(() => pending--)
      .catch((err: unknown) => log.error({ err }, 'tunnel onSession failed'));
  };
  const ws = await listenWebSocket({
    host: opts.host,
    port: opts.port,
    tls: opts.tls,
    preUpgradeTimeoutMs: opts.preUpgradeTimeoutMs ?? opts.handshakeTimeoutMs,
    maxConnections: opts.maxConnections,
    admit: () => (pending >= maxPending ? 'too many pending' : undefined),
    onChannel,
    onRefused: refused,
  });
  return {
    address: () => ws.address(),
    setKeys: (next) => {
      keys = next;
    },
    sessions,
    close: async () => {
      await Promise.all([...sessions].map((s) => s.close('listener closing')));
      await ws.close();
    },
  };
}
