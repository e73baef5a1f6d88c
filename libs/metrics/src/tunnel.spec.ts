import { createRegistry } from './registry';
import { createTunnelMetrics } from './tunnel';

const line = (text: string, direction: string): string | undefined =>
  text.split('\n').find((l) => l.startsWith(`tunnel_bytes_total{direction="${direction}"`));

describe('tunnel metrics', () => {
  it('reports tunnel_bytes_total per direction as running totals across scrapes', async () => {
    const registry = createRegistry('relay');
    const m = createTunnelMetrics(registry, (r) => r);
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

  it('labels each reason with what the given metricReason makes of it', async () => {
    const registry = createRegistry('worker');
    const m = createTunnelMetrics(registry, (r) => (r === 'evicted' ? r : 'other'));
    m.handshake('failed', 'evicted');
    m.handshake('failed', 'anything');
    m.handshake('ok');
    m.frameRejected('bad frame');
    m.streamRefused('unknown target');
    m.sessionDown('10.0.0.1', 'connection lost');
    const text = await registry.metrics();
    expect(text).toContain('tunnel_handshakes_total{result="failed",reason="evicted"');
    expect(text).toContain('tunnel_handshakes_total{result="failed",reason="other"');
    expect(text).toContain('tunnel_handshakes_total{result="ok",reason=""');
    expect(text).toContain('tunnel_frames_rejected_total{reason="other"');
    expect(text).toContain('tunnel_streams_refused_total{reason="other"');
    expect(text).toContain('tunnel_sessions_closed_total{reason="other"');
    expect(text).not.toMatch(/bad frame|unknown target|connection lost|anything/);
  });

  it('counts sessions up per peer label, so one of two from an address ending leaves 1', async () => {
    const registry = createRegistry('worker');
    const m = createTunnelMetrics(registry, (r) => r);
    m.sessionUp('10.0.0.1');
    m.sessionUp('10.0.0.1');
    m.sessionDown('10.0.0.1', 'connection lost');
    expect(await registry.metrics()).toMatch(/tunnel_up\{peer="10\.0\.0\.1"[^}]*\} 1\n/);
  });
});
