import { defineHostMetrics, type HostMetricDefs, type Registry } from '../../../metrics/src';
import type { RedisStatus } from '../redis';
import type { DiskStatus } from './disk';
import type { HostStatus } from './system';

/** Records host, DATA_FOLDER and Redis probe results. */
export class HostMetrics {
  readonly defs: HostMetricDefs;

  constructor(registry: Registry) {
    this.defs = defineHostMetrics(registry);
  }

  disk(s: DiskStatus): void {
    const l = { mountpoint: s.path };
    this.defs.fsAvail.set(l, s.freeBytes);
    this.defs.fsSize.set(l, s.totalBytes);
    this.defs.dataFolderLow.set(l, s.belowThreshold ? 1 : 0);
  }

  host(s: HostStatus): void {
    this.defs.memAvailable.set(s.memAvailableBytes);
    this.defs.memTotal.set(s.memTotalBytes);
    this.defs.cpuLoad.set(s.cpuLoadPercent / 100);
  }

  redis(s: RedisStatus): void {
    const d = this.defs;
    d.redisUp.set(s.up ? 1 : 0);
    d.redisHealthy.set(s.healthy ? 1 : 0);
    // Label-less gauges cannot drop their sample (prom-client resets them to 0): while Redis is
    // down they keep their last value and redis_up says 0.
    if (s.usedMemoryBytes !== undefined) d.redisMemory.set(s.usedMemoryBytes);
    if (s.latencyMs !== undefined) d.redisPing.set(s.latencyMs / 1000);
  }
}
