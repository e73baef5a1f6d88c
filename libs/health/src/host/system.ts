import { readFile } from 'node:fs/promises';
import { cpus as osCpus } from 'node:os';
import si from 'systeminformation';

/**
 * The one file that imports systeminformation, for mem() only (it reads /proc/meminfo
 * asynchronously). Not its currentLoad(): on Linux that runs `cat /proc/stat | grep cpu` with
 * execSync, three processes spawned while the worker's event loop (and every tunnel stream
 * through it) waits, once per GPU_SAMPLE_INTERVAL; nor graphics(), which runs nvidia-smi with
 * execFileSync, blocking the loop for as long as nvidia-smi takes. The CPU load is read from
 * /proc/stat here instead, asynchronously.
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

/** Cumulative CPU time of all cores: busy and total, in the source's own unit. */
export interface CpuTimes {
  busy: number;
  total: number;
}

/**
 * The aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal
 * (guest and guest_nice are already inside user and nice). Idle time is idle + iowait.
 * Undefined for anything else.
 */
export function parseProcStat(text: string): CpuTimes | undefined {
  const end = text.indexOf('\n');
  const line = end < 0 ? text : text.slice(0, end);
  if (!line.startsWith('cpu ')) return undefined;
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (f.length < 4 || !f.every(Number.isFinite)) return undefined;
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - (f[4] ?? 0), total };
}

/** Busy share of the CPU time between two readings, 0-100 (0 if no time passed). */
export function loadBetween(before: CpuTimes | undefined, now: CpuTimes): number {
  const total = now.total - (before?.total ?? 0);
  const busy = now.busy - (before?.busy ?? 0);
  return total > 0 ? Math.min(100, Math.max(0, (busy / total) * 100)) : 0;
}

async function cpuTimes(): Promise<CpuTimes> {
  const fromProc = await readFile('/proc/stat', 'utf8').then(parseProcStat, () => undefined);
  if (fromProc) return fromProc;
  // Not Linux: Node's per-core counters (no iowait or steal).
  let busy = 0;
  let total = 0;
  for (const { times: t } of osCpus()) {
    const sum = t.user + t.nice + t.sys + t.idle + t.irq;
    total += sum;
    busy += sum - t.idle;
  }
  return { busy, total };
}

let previous: CpuTimes | undefined;

export async function probeHost(): Promise<HostStatus> {
  const [times, mem] = await Promise.all([cpuTimes(), si.mem()]);
  const cpuLoadPercent = loadBetween(previous, times);
  previous = times;
  return {
    cpuLoadPercent,
    cpus: osCpus().length,
    memTotalBytes: mem.total,
    memAvailableBytes: mem.available,
    memUsedPercent: mem.total === 0 ? 0 : ((mem.total - mem.available) / mem.total) * 100,
  };
}
