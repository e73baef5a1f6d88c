import { createRegistry } from './registry';
import { createTunnelMetrics } from './tunnel';

const line = (text: string, direction: string): string | undefined =>
  text.split('\n').find((l) => l.startsWith(`tunnel_bytes_total{direction="${direction}"`));

describe('tunnel metrics', () => {
  it('reports tunnel_bytes_total per direction as running totals across scrapes', async () => {
    const registry = createRegistry('relay');
    const m = createTunnelMetrics(registry);
    m.bytes('in', 5);
    m.bytes('in', 7);
    m.bytes('out', 3);
    let text = await registry.metrics();
    expect(line(text, 'in')).toMatch(/ 12$/);
    expect(line(text, 'out')).toMatch(/ 3$/);
    m.bytes('out', 4);
    text = await registry.metrics();
    expect(line(text, 'in')).toMatch(/ 12$/);
    expect(line(text, 'out')).toMatch(/ 7$/);
  });

  it('never takes a label value from the peer: its CLOSE reason becomes `peer closed`, the unknown `other`', async () => {
    const registry = createRegistry('worker');
    const m = createTunnelMetrics(registry);
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

  it('counts sessions up per peer label, so one of two from an address ending leaves 1', async () => {
    const registry = createRegistry('worker');
    const m = createTunnelMetrics(registry);
    m.sessionUp('10.0.0.1');
    m.sessionUp('10.0.0.1');
    m.sessionDown('10.0.0.1', 'connection lost');
    expect(await registry.metrics()).toMatch(/tunnel_up\{peer="10\.0\.0\.1"[^}]*\} 1\n/);
  });
});
