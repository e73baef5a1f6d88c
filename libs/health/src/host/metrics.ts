import { Gauge, type Registry } from '../../../metrics/src';
import type { RedisStatus } from '../redis';
import type { DiskStatus } from './disk';
import type { HostStatus } from './system';

/**
 * node_exporter's names for DATA_FOLDER (label mountpoint = the DATA_FOLDER path) and the host,
 * redis_exporter's for Redis, plus ours.
 */
const METRIC = {
  FS_AVAIL_BYTES: 'node_filesystem_avail_bytes',
  FS_SIZE_BYTES: 'node_filesystem_size_bytes',
  DATA_FOLDER_LOW: 'data_folder_below_min_free',
  MEM_AVAILABLE_BYTES: 'node_memory_MemAvailable_bytes',
  MEM_TOTAL_BYTES: 'node_memory_MemTotal_bytes',
  HOST_CPU_LOAD_RATIO: 'host_cpu_load_ratio',
  REDIS_UP: 'redis_up',
  REDIS_MEMORY_USED_BYTES: 'redis_memory_used_bytes',
  REDIS_PING_SECONDS: 'redis_ping_latency_seconds',
  REDIS_HEALTHY: 'redis_healthy',
} as const;

/** Host, DATA_FOLDER and Redis gauges. */
export interface HostMetricDefs {
  fsAvail: Gauge<'mountpoint'>;
  fsSize: Gauge<'mountpoint'>;
  dataFolderLow: Gauge<'mountpoint'>;
  memAvailable: Gauge<string>;
  memTotal: Gauge<string>;
  cpuLoad: Gauge<string>;
  redisUp: Gauge<string>;
  redisMemory: Gauge<string>;
  redisPing: Gauge<string>;
  redisHealthy: Gauge<string>;
}

export function defineHostMetrics(registry: Registry): HostMetricDefs {
  const registers = [registry];
  const fs = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: ['mountpoint'] as const, registers });
  const g = (name: string, help: string) => new Gauge({ name, help, registers });
  return {
    fsAvail: fs(METRIC.FS_AVAIL_BYTES, 'DATA_FOLDER: bytes available to non-root users'),
    fsSize: fs(METRIC.FS_SIZE_BYTES, 'DATA_FOLDER: filesystem size in bytes'),
    dataFolderLow: fs(
      METRIC.DATA_FOLDER_LOW,
      '1 when DATA_FOLDER free space is under MIN_FREE_DISK',
    ),
    memAvailable: g(METRIC.MEM_AVAILABLE_BYTES, 'Memory available to new processes, bytes'),
    memTotal: g(METRIC.MEM_TOTAL_BYTES, 'Total memory, bytes'),
    cpuLoad: g(METRIC.HOST_CPU_LOAD_RATIO, 'Host CPU load over all cores, 0-1'),
    redisUp: g(METRIC.REDIS_UP, '1 when Redis answers PING'),
    redisMemory: g(METRIC.REDIS_MEMORY_USED_BYTES, "Redis INFO memory's used_memory"),
    redisPing: g(METRIC.REDIS_PING_SECONDS, 'Round trip of the last PING, seconds'),
    redisHealthy: g(METRIC.REDIS_HEALTHY, '1 when Redis is up with noeviction and AOF'),
  };
}

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
