import { Counter, Gauge, Histogram, type Registry } from './registry';

/**
 * What the tunnel reports: the shape of libs/tunnel's TunnelMetrics, declared here so that
 * libs/metrics imports no other lib. The daemons hand what createTunnelMetrics returns to the
 * tunnel, so the compiler checks there that the two shapes agree.
 */
export interface TunnelRecorder {
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
 * The tunnel's metrics, the same names on relay (ADMIN_LISTEN /metrics) and worker (API /metrics).
 * Reasons are the fixed strings of docs/PROTOCOL.md: each goes through `metricReason` (libs/tunnel's,
 * which the daemons pass), which turns anything else into `other`, so no string a peer chooses
 * becomes a label value and the label cardinality stays bounded.
 */
export function createTunnelMetrics(
  registry: Registry,
  metricReason: (reason: string) => string,
): TunnelRecorder {
  const registers = [registry];
  const handshakes = new Counter({
    name: 'tunnel_handshakes_total',
    help: 'Tunnel handshakes by result and failure reason',
    labelNames: ['result', 'reason'],
    registers,
  });
  const rejected = new Counter({
    name: 'tunnel_frames_rejected_total',
    help: 'Frames that ended a session (authentication, order, format), by reason',
    labelNames: ['reason'],
    registers,
  });
  // Counted in two numbers and handed to prom-client when scraped: bytes() runs for every
  // frame, and a labelled inc() hashes its labels each time (1.7 % of the relay's CPU in a
  // round-trip benchmark).
  const byteTotals = { in: 0, out: 0 };
  new Counter({
    name: 'tunnel_bytes_total',
    help: 'Tunnel payload bytes by direction',
    labelNames: ['direction'],
    registers,
    collect() {
      this.reset();
      this.inc({ direction: 'in' }, byteTotals.in);
      this.inc({ direction: 'out' }, byteTotals.out);
    },
  });
  const open = new Gauge({ name: 'tunnel_streams_open', help: 'Streams open now', registers });
  const streams = new Counter({ name: 'tunnel_streams_total', help: 'Streams opened', registers });
  const refused = new Counter({
    name: 'tunnel_streams_refused_total',
    help: 'Streams refused, by reason',
    labelNames: ['reason'],
    registers,
  });
  const rtt = new Histogram({
    name: 'tunnel_rtt_seconds',
    help: 'Tunnel ping round-trip time',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers,
  });
  const reconnects = new Counter({
    name: 'tunnel_reconnects_total',
    help: 'Reconnect attempts',
    registers,
  });
  const up = new Gauge({
    name: 'tunnel_up',
    help: 'Authenticated sessions up with this peer (the dialed host:port, or a peer address)',
    labelNames: ['peer'],
    registers,
  });
  const downs = new Counter({
    name: 'tunnel_sessions_closed_total',
    help: 'Sessions that ended, by reason',
    labelNames: ['reason'],
    registers,
  });
  return {
    handshake: (result, reason) =>
      handshakes.inc({ result, reason: reason === undefined ? '' : metricReason(reason) }),
    frameRejected: (reason) => rejected.inc({ reason: metricReason(reason) }),
    bytes: (direction, n) => {
      byteTotals[direction] += n;
    },
    streamOpened: () => {
      open.inc();
      streams.inc();
    },
    streamClosed: () => open.dec(),
    streamRefused: (reason) => refused.inc({ reason: metricReason(reason) }),
    rtt: (seconds) => rtt.observe(seconds),
    reconnect: () => reconnects.inc(),
    // Counted up and down, not set: two sessions from one address (a listener labels by
    // address) must not read 0 when one of them ends.
    sessionUp: (peer) => up.inc({ peer }),
    sessionDown: (peer, reason) => {
      up.dec({ peer });
      downs.inc({ reason: metricReason(reason) });
    },
  };
}
