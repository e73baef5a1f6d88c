import { createRegistry } from '../../../metrics/src';
import { diskStatus } from './disk';
import { HostMetrics } from './metrics';

describe('HostMetrics', () => {
  it('records DATA_FOLDER, host and Redis values exactly; a down Redis reads redis_up 0', async () => {
    const registry = createRegistry('worker');
    const m = new HostMetrics(registry);
    m.disk(diskStatus('/data', { bsize: 4096, blocks: 1000, bavail: 40 }, { percent: 5 }));
    m.host({
      cpuLoadPercent: 25,
      cpus: 2,
      memTotalBytes: 8e9,
      memAvailableBytes: 6e9,
      memUsedPercent: 25,
    });
    m.redis({ up: true, healthy: true, latencyMs: 1.5, usedMemoryBytes: 1234, problems: [] });
    const text = await registry.metrics();
    expect(text).toContain(
      'node_filesystem_avail_bytes{mountpoint="/data",daemon="worker"} 163840\n',
    );
    expect(text).toContain(
      'node_filesystem_size_bytes{mountpoint="/data",daemon="worker"} 4096000\n',
    );
    expect(text).toContain('data_folder_below_min_free{mountpoint="/data",daemon="worker"} 1\n');
    expect(text).toContain('host_cpu_load_ratio{daemon="worker"} 0.25\n');
    expect(text).toContain('node_memory_MemAvailable_bytes{daemon="worker"} 6000000000\n');
    expect(text).toContain('redis_ping_latency_seconds{daemon="worker"} 0.0015\n');
    expect(text).toContain('redis_memory_used_bytes{daemon="worker"} 1234\n');
    m.redis({ up: false, healthy: false, problems: ['down'] });
    const after = await registry.metrics();
    expect(after).toContain('redis_up{daemon="worker"} 0\n');
    expect(after).toContain('redis_healthy{daemon="worker"} 0\n');
  });
});
