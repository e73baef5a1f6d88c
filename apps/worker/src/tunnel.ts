import { readFileSync } from 'node:fs';
import type { Logger, WorkerConfig } from '../../../libs/config/src';
import {
  listenTunnel,
  loadKeyRing,
  serveTargets,
  TunnelDialer,
  type TargetAddress,
  type TunnelListener,
  type TunnelMetrics,
  type TunnelSession,
} from '../../../libs/tunnel/src';

/** The worker's end of the tunnels: accepts them (TUNNEL_LISTEN) or dials them (reverse mode). */
export interface WorkerTunnels {
  sessions(): TunnelSession[];
  reload(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the worker's tunnels. Streams may only name targets of this map (default `api` →
 * API_LISTEN); the relay never sends an address, so the worker decides every connection.
 */
export async function startWorkerTunnels(
  config: WorkerConfig,
  log: Logger,
  metrics: TunnelMetrics,
): Promise<WorkerTunnels> {
  const keys = await loadKeyRing(config.keyFiles);
  const targets = new Map<string, TargetAddress>([
    ...Object.entries(config.tunnelTargets),
    ['api', apiTarget(config)],
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
    reload: async () => {
      const next = await loadKeyRing(config.keyFiles);
      listener?.setKeys(next);
      for (const d of dialers) d.setKeys(next);
    },
    close: async () => {
      await Promise.all(dialers.map((d) => d.stop()));
      await listener?.close();
    },
  };
}

/** API_LISTEN as a connect address: a wildcard bind is reached on loopback. */
function apiTarget(config: WorkerConfig): TargetAddress {
  const { host, port } = config.apiListen;
  const wildcard = host === '0.0.0.0' || host === '::';
  return { host: wildcard ? '127.0.0.1' : host, port };
}
