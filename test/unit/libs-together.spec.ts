import { STREAM_LIMITS } from '../../libs/jobs/src/api/stream-limits';
import { createRegistry, createTunnelMetrics } from '../../libs/metrics/src';
import { MAX_STREAMS, metricReason } from '../../libs/tunnel/src';

// What must hold between libs that do not import each other (docs/ARCHITECTURE.md, "Layout and
// the direction of imports"): checked here, where both are in reach, the way the daemons put
// them together.
describe('libs together', () => {
  it('tunnel metrics never take a label value from the peer: its CLOSE reason becomes `peer closed`, the unknown `other`', async () => {
    const registry = createRegistry('worker');
    const m = createTunnelMetrics(registry, metricReason);
    for (let i = 0; i < 100; i++) m.sessionDown('10.0.0.1', `peer closed: chosen by the peer ${i}`);
    m.sessionDown('10.0.0.1', 'closed: relay stopping');
    m.streamRefused('unknown target');
    m.streamRefused('a name the peer made up');
    m.handshake('failed', 'evicted');
    const text = await registry.metrics();
    const closed = text.split('\n').filter((l) => l.startsWith('tunnel_sessions_closed_total{'));
    expect(closed).toEqual([
      'tunnel_sessions_closed_total{reason="peer closed",daemon="worker"} 100',
      'tunnel_sessions_closed_total{reason="closed",daemon="worker"} 1',
    ]);
    expect(text).toContain('tunnel_streams_refused_total{reason="unknown target"');
    expect(text).toContain('tunnel_streams_refused_total{reason="other"');
    expect(text).not.toContain('made up');
    expect(text).toContain('tunnel_handshakes_total{result="failed",reason="evicted"');
  });

  it('job API streams leave at least half of a tunnel session’s streams to short requests', () => {
    expect(STREAM_LIMITS.events.total + STREAM_LIMITS.logs.total).toBeLessThanOrEqual(
      MAX_STREAMS / 2,
    );
  });
});
