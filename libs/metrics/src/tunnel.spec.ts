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
});
