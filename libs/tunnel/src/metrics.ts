/**
 * What the tunnel reports. libs/metrics implements it with prom-client; the tunnel itself
 * never imports a metrics library. Reasons are the strings of docs/PROTOCOL.md section 5
 * (METRIC_REASONS; an implementation passes each through `metricReason`).
 */
export interface TunnelMetrics {
  handshake(result: 'ok' | 'failed', reason?: string): void;
  frameRejected(reason: string): void;
  bytes(direction: 'in' | 'out', n: number): void;
  streamOpened(): void;
  streamClosed(): void;
  streamRefused(reason: string): void;
  rtt(seconds: number): void;
  reconnect(): void;
  sessionUp(peer: string): void;
  sessionDown(peer: string, reason: string): void;
}

/**
 * Every reason the tunnel reports (docs/PROTOCOL.md section 5, and the stream refusals): the
 * only values a `reason` label may take, so that nothing a peer chooses becomes a label.
 */
export const METRIC_REASONS: ReadonlySet<string> = new Set([
  // upgrade, handshake, pending connections
  'unsupported version',
  'timeout',
  'evicted',
  'bad message',
  'bad key',
  'bad public key',
  'connection closed',
  // session
  'decrypt failed',
  'bad frame',
  'protocol violation',
  'window exceeded',
  'text message',
  'frame too large',
  'ping timeout',
  'counter exhausted',
  'send queue full',
  'peer closed',
  'closed',
  'connection lost',
  // dial
  'connect failed',
  'tls error',
  'upgrade refused',
  'proxy refused',
  // streams
  'unknown target',
  'too many streams',
  'target refused',
]);

/**
 * The label for a reason: itself if it is one of METRIC_REASONS, its fixed part for
 * `peer closed: <the peer's words>` and `closed: <ours>`, else `other`. The peer's CLOSE
 * reason and a stream's target name are the peer's choice: they go to logs, never to labels.
 */
export function metricReason(reason: string): string {
  const fixed = /^(peer closed|closed): /.exec(reason)?.[1] ?? reason;
  return METRIC_REASONS.has(fixed) ? fixed : 'other';
}

const noop = (): void => undefined;

/** A TunnelMetrics that records nothing. */
export const noopTunnelMetrics: TunnelMetrics = {
  handshake: noop,
  frameRejected: noop,
  bytes: noop,
  streamOpened: noop,
  streamClosed: noop,
  streamRefused: noop,
  rtt: noop,
  reconnect: noop,
  sessionUp: noop,
  sessionDown: noop,
};
