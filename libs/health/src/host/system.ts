import si from 'systeminformation';

/**
 * The one file that imports systeminformation. Only its asynchronous, non-blocking calls are
 * used (currentLoad reads /proc, mem reads /proc/meminfo); never graphics(), which runs nvidia-smi
 * with execFileSync and blocks the event loop (NOTES.md).
 */
export interface HostStatus {
  /** CPU load over all cores since the previous call, 0-100. */
  cpuLoadPercent: number;
  cpus: number;
  memTotalBytes: number;
  /** Memory available to new processes (MemAvailable). */
  memAvailableBytes: number;
  memUsedPercent: number;
}

export async function probeHost(): Promise<HostStatus> {
  const [load, mem] = await Promise.all([si.currentLoad(), si.mem()]);
  return {
    cpuLoadPercent: load.currentLoad,
    cpus: load.cpus.length,
    memTotalBytes: mem.total,
    memAvailableBytes: mem.available,
    memUsedPercent: mem.total === 0 ? 0 : ((mem.total - mem.available) / mem.total) * 100,
  };
}
