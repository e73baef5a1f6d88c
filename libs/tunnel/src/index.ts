/**
 * libs/tunnel: the encrypted, multiplexed WebSocket tunnel between relay and workers.
 * The wire protocol is specified in docs/PROTOCOL.md.
 */
export {
  generateKeyFile,
  keyFingerprint,
  KeyFileError,
  KeyRing,
  loadKeyFile,
  loadKeyRing,
  readKeyBytes,
  logKeyWarnings,
  readAtMost,
} from './keys';
export type { KeyEntry, ReadKeyOptions } from './keys';
export { METRIC_REASONS, metricReason, noopTunnelMetrics } from './metrics';
export type { TunnelMetrics } from './metrics';
export { listenTunnel } from './listen';
export type { ListenTunnelOptions, TunnelListener } from './listen';
export { TunnelDialer } from './dial';
export type { TunnelDialerOptions } from './dial';
export { TunnelEndpoint } from './endpoint';
export type { TunnelEndpointConfig, TunnelEndpointOptions, TunnelView } from './endpoint';
export type { BackoffOptions } from './backoff';
export { TunnelSession } from './session';
export type { SessionOptions } from './session';
export { StreamResetError, TunnelStream } from './stream';
export { serveTargets, splice, type SpliceOptions } from './serve';
export type { LocalTarget, Target, TargetAddress } from './serve';
export { HandshakeError } from './handshake-driver';
export { Admission } from './transport/admission';
export type { Ticket } from './transport/admission';
export { openFileLimit, withinFileLimit } from './transport/fd-limit';
export {
  boundHttpListener,
  FIRST_REQUEST_TIMEOUT_MS,
  type HttpListenerLimits,
} from './transport/http-listener-limits';
export {
  BDP_STREAM_WINDOW,
  HANDSHAKE_TIMEOUT_MS,
  LONE_STREAM_WINDOW,
  MAX_STREAM_WINDOW,
  MAX_STREAMS,
  PROTOCOL_VERSION,
  SESSION_WINDOW,
  STREAM_WINDOW,
} from './protocol';
