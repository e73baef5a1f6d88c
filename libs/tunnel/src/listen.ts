import type { AddressInfo } from 'node:net';
import type { Logger } from '../../config/src';
import { FailureLog } from './failure-log';
import { HandshakeError, respond } from './handshake-driver';
import type { KeyRing } from './keys';
import { HANDSHAKE_TIMEOUT_MS, MAX_CONNECTIONS, MAX_PENDING, type SessionKeys } from './protocol';
import { noopTunnelMetrics, type TunnelMetrics } from './metrics';
import { TunnelSession, type SessionOptions } from './session';
import { withinFileLimit } from './transport/fd-limit';
import { listenWebSocket, type PendingChannel } from './transport/listener';

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
  /**
   * Unauthenticated connections held at once (MAX_PENDING); a newcomer past it evicts the
   * oldest connection of the address holding the most (transport/admission.ts).
   */
  maxPending?: number;
  /** The one deadline from accept to authenticated (ms); default HANDSHAKE_TIMEOUT_MS, 5 s. */
  handshakeTimeoutMs?: number;
  /**
   * Open connections at most (sessions included); past it Node drops newcomers at once. Default
   * MAX_CONNECTIONS (4,096), or three quarters of the descriptor limit if that is lower.
   */
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
  /** Connections accepted and not authenticated yet (at most about maxPending). */
  readonly pending: number;
  /** Stops listening and closes every session (authenticated CLOSE). */
  close(): Promise<void>;
}

/**
 * Accepts tunnels on host:port. Each connection must finish the handshake with a key of the
 * ring within the deadline from its accept; only then is a TunnelSession made and handed to
 * `onSession`. Every refusal is counted (`metrics.handshake('failed', reason)`) and logged,
 * a few per reason and interval one by one and the rest as a count (failure-log.ts), so that
 * a flood does not turn into a flood of log lines.
 */
export async function listenTunnel(opts: ListenTunnelOptions): Promise<TunnelListener> {
  const metrics = opts.metrics ?? noopTunnelMetrics;
  const log = opts.logger;
  const failures = new FailureLog(log, 'tunnel handshake failed');
  let keys = opts.keys;
  const sessions = new Set<TunnelSession>();
  const refused = (reason: string, peer: string): void => {
    failures.note(reason, { peer });
    metrics.handshake('failed', reason);
  };
  const onChannel = ({ channel, signal, authenticated }: PendingChannel): void => {
    const ring = keys;
    const up = (sessionKeys: SessionKeys): void => {
      authenticated();
      const session = new TunnelSession(channel, sessionKeys, {
        initiator: false,
        logger: log,
        metrics,
        // The peer's address without its port: a label that a reconnect does not multiply.
        metricsPeer: hostOf(channel.peer),
        pingIntervalMs: opts.pingIntervalMs,
        maxStreams: opts.maxStreams,
      });
      metrics.handshake('ok');
      // Frames that came with the handshake may have ended it already: nothing to keep or serve.
      if (session.closeReason !== undefined) return;
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
      log.info(
        { peer: channel.peer, key: ring.entries[sessionKeys.keyIndex]?.fingerprint },
        'tunnel session up',
      );
      opts.onSession(session);
    };
    const down = (err: unknown): void =>
      refused(err instanceof HandshakeError ? err.reason : 'bad message', channel.peer);
    respond(channel, ring.authKeys, { signal })
      .then(up, down)
      .catch((err: unknown) => log.error({ err }, 'tunnel onSession failed'));
  };
  // Pending connections may briefly reach twice their cap (admission.ts), and sessions need
  // room beside them: the cap is a quarter of the connections, which fit the descriptors.
  const maxConnections = opts.maxConnections ?? withinFileLimit(MAX_CONNECTIONS, 0.75);
  const ws = await listenWebSocket({
    host: opts.host,
    port: opts.port,
    tls: opts.tls,
    deadlineMs: opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS,
    maxPending: opts.maxPending ?? Math.max(1, Math.min(MAX_PENDING, maxConnections >> 2)),
    maxConnections,
    onChannel,
    onDropped: refused,
  });
  return {
    address: () => ws.address(),
    get pending() {
      return ws.pending;
    },
    setKeys: (next) => {
      keys = next;
    },
    sessions,
    close: async () => {
      failures.flush();
      await Promise.all([...sessions].map((s) => s.close('listener closing')));
      await ws.close();
    },
  };
}

/** `host` of `host:port` (IPv6 addresses keep their colons). */
function hostOf(peer: string): string {
  const i = peer.lastIndexOf(':');
  return i > 0 ? peer.slice(0, i) : peer;
}
