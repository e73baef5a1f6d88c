import type { Server } from 'node:http';
import type { Logger, WorkerConfig } from '../../../libs/config/src';
import {
  serveTargets,
  TunnelEndpoint,
  type Target,
  type TunnelMetrics,
} from '../../../libs/tunnel/src';

/**
 * Starts the worker's end of the tunnels (TUNNEL_LISTEN, or TUNNEL_CONNECT in reverse mode) and
 * serves its targets on each session. Streams may only name targets of this map (`api`, and
 * TUNNEL_TARGETS); the relay never sends an address, so the worker decides every connection.
 * Streams to `api` are handed to `api`, the API's HTTP server (the one listening on
 * API_LISTEN), in this process, as connections of their own: no TCP connection to API_LISTEN,
 * one event-loop turn and two system calls less each way (docs/PROTOCOL.md, "Streams").
 */
export function startWorkerTunnels(
  config: WorkerConfig,
  log: Logger,
  metrics: TunnelMetrics,
  api: Server,
): Promise<TunnelEndpoint> {
  const targets = new Map<string, Target>([
    ...Object.entries(config.tunnelTargets),
    ['api', { accept: (stream) => api.emit('connection', stream) }],
  ]);
  return TunnelEndpoint.start({
    config,
    logger: log,
    metrics,
    onSession: (s) => serveTargets(s, targets, log, metrics),
  });
}
