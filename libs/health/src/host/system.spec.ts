import { probeHost } from './system';

describe('probeHost', () => {
  it('reads CPU load and memory asynchronously', async () => {
    const h = await probeHost();
    expect(h.cpus).toBeGreaterThan(0);
    expect(h.cpuLoadPercent).toBeGreaterThanOrEqual(0);
    expect(h.cpuLoadPercent).toBeLessThanOrEqual(100);
    expect(h.memTotalBytes).toBeGreaterThan(0);
    expect(h.memAvailableBytes).toBeLessThanOrEqual(h.memTotalBytes);
  });
});
