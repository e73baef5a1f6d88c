import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Logger, WorkerConfig } from '../../../libs/config/src';
import {
  listenTunnel,
  loadKeyRing,
  logKeyWarnings,
  serveTargets,
  TunnelDialer,
  type Target,
  type TunnelListener,
  type TunnelMetrics,
  type TunnelSession,
} from '../../../libs/tunnel/src';

/** The worker's end of the tunnels: accepts them (TUNNEL_LISTEN) or dials them (reverse mode). */
export interface WorkerTunnels {
  sessions(): TunnelSession[];
  /**
   * SIGHUP: loads `keyFiles` (default: TUNNEL_KEY_FILE as started) for the next handshakes;
   * sessions up keep theirs. A file that cannot be used throws and the keys in use stay.
   */
  reload(keyFiles?: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the worker's tunnels. Streams may only name targets of this map (`api`, and
 * TUNNEL_TARGETS); the relay never sends an address, so the worker decides every connection.
 * Streams to `api` are handed to `api`, the API's HTTP server (the one listening on
 * API_LISTEN), in this process, as connections of their own: no TCP connection to API_LISTEN,
 * one event-loop turn and two system calls less each way (docs/PROTOCOL.md, "Streams").
 */
export async function startWorkerTunnels(
  config: WorkerConfig,
  log: Logger,
  metrics: TunnelMetrics,
  api: Server,
): Promise<WorkerTunnels> {
  const keys = await loadKeyRing(config.keyFiles);
  logKeyWarnings(keys, log);
  const targets = new Map<string, Target>([
    ...Object.entries(config.tunnelTargets),
    ['api', { accept: (stream) => api.emit('connection', stream) }],
  ]);
  const live = new Set<TunnelSession>();
  const onSession = (s: TunnelSession) => {
    live.add(s);
    s.once('close', () => live.delete(s));
    serveTargets(s, targets, log, metrics);
  };
  let listener: TunnelListener | undefined;
  if (config.tunnelListen) {
    const tls = config.tls && {
      cert: readFileSync(config.tls.certFile),
      key: readFileSync(config.tls.keyFile),
    };
    listener = await listenTunnel({
      ...config.tunnelListen,
      keys,
      tls,
      logger: log,
      metrics,
      onSession,
    });
    log.info({ tunnel: listener.address(), tls: Boolean(tls) }, 'accepting tunnels');
  }
  const dialers = config.tunnelConnect.map(
    (url) =>
      new TunnelDialer({ url, keys, logger: log, metrics, proxy: config.httpsProxy, onSession }),
  );
  for (const d of dialers) d.start();

  return {
    sessions: () => [...live],
    reload: async (keyFiles = config.keyFiles) => {
      const next = await loadKeyRing(keyFiles);
      logKeyWarnings(next, log);
      listener?.setKeys(next);
      for (const d of dialers) d.setKeys(next);
      log.info({ keys: next.fingerprints }, 'tunnel key ring loaded');
    },
    close: async () => {
      await Promise.all(dialers.map((d) => d.stop()));
      await listener?.close();
    },
  };
}
