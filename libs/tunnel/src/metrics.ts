/**
 * What the tunnel reports. libs/metrics implements it with prom-client; the tunnel itself
 * never imports a metrics library. Reasons are the strings of docs/PROTOCOL.md section 5.
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
