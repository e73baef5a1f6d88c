import { EventEmitter } from 'node:events';
import { silentLogger, type GpuSelection, type Logger } from '../../../config/src';
import {
  describeProblem,
  gpuProblems,
  instanceProblems,
  isInstanceSelected,
  isSelected,
  missingSelected,
  type GpuProblem,
} from './health';
import type { MigInstanceReading } from './mig';
import type { GpuProbeErrorReason, GpuQuery, GpuReading, NvidiaSmiResult } from './nvidia-smi';

interface Health {
  healthy: boolean;
  problems: GpuProblem[];
  /** Human-readable problems, for /health and `gpu-sidecar status`. */
  reasons: string[];
}

/** A MIG instance with its health (its GPU's problems apply to it too). */
export interface MigInstanceStatus extends MigInstanceReading, Health {}

export interface GpuStatus extends Omit<GpuReading, 'mig'>, Health {
  /** With MIG enabled: the selected instances, each a device; the GPU itself is then none. */
  mig?: MigInstanceStatus[];
}

/** A MIG instance seen earlier in this run that nvidia-smi no longer lists (re-partitioned). */
export interface VanishedInstance {
  uuid: string;
  profile: string;
  /** Its GPU's index and UUID. */
  gpu: number;
  parent: string;
  /** When the first sample without it was taken. */
  since: Date;
}

/**
 * One schedulable device: a GPU without MIG, or one MIG instance (then `parent` is its GPU's
 * UUID and `index` its GPU's index). What the allocator hands out, by `uuid`.
 */
export interface GpuDeviceInfo {
  index: number;
  uuid: string;
  /** The GPU's name (a MIG instance's is its GPU's). */
  name: string;
  memoryTotalBytes?: number;
  parent?: string;
  profile?: string;
  gpuInstanceId?: number;
  healthy: boolean;
}

/** A device as the allocator takes it: without its health, which it asks when it hands one out. */
type DeviceOnly = Omit<GpuDeviceInfo, 'healthy'>;

/** How many vanished instances a snapshot remembers (re-partitions are rare; the list stays short). */
const VANISHED_KEPT = 32;

export interface GpuProbeError {
  reason: GpuProbeErrorReason;
  message: string;
  at: Date;
}

/** What the last sample says. */
export interface GpuSnapshot {
  /** Selected GPUs from the last good sample (with health as of now). */
  gpus: GpuStatus[];
  /** GPU_DEVICES entries that nvidia-smi did not report (a lost GPU or MIG instance). */
  missing: string[];
  /** Selected MIG instances that vanished since they were seen (newest last). */
  vanished?: VanishedInstance[];
  /** When the GPU values were read; undefined before the first good sample. */
  sampledAt?: Date;
  /** True when the last query failed: `gpus` holds the last good values, not current ones. */
  stale: boolean;
  /** The last query's failure, while it lasts. */
  error?: GpuProbeError;
  /** How long the last query took. */
  durationMs?: number;
}

export interface GpuSamplerOptions {
  query: GpuQuery;
  selection: GpuSelection;
  maxTemp: number;
  intervalMs: number;
  /** Called after every sample (the GpuMetrics recorder's `record`). */
  onSnapshot?: (s: GpuSnapshot) => void;
  logger?: Logger;
}

export interface GpuIdentity {
  index: number;
  uuid: string;
}

/**
 * Samples the GPUs every `intervalMs`, one query at a time: the next query starts `intervalMs`
 * after the previous one ended, so a slow nvidia-smi never piles up. Events:
 * - `snapshot` (GpuSnapshot) after every sample;
 * - `health` (GpuIdentity[] of healthy devices) when that set changes, for the allocator;
 * - `devices` (GpuDeviceInfo[]) after a good sample that changed the devices (a MIG
 *   re-partition, a GPU gone or back), for the allocator.
 */
export class GpuSampler extends EventEmitter {
  private last: GpuSnapshot = { gpus: [], missing: [], vanished: [], stale: true };
  private timer?: NodeJS.Timeout;
  private inFlight?: Promise<GpuSnapshot>;
  private running = false;
  private healthyKey = '';
  private devicesKey = '';
  private readonly log: Logger;

  constructor(private readonly opts: GpuSamplerOptions) {
    super();
    this.log = opts.logger ?? silentLogger();
  }

  /** Takes a first sample now (awaited), then one every interval. */
  async start(): Promise<GpuSnapshot> {
    if (this.running) return this.last;
    this.running = true;
    const first = await this.sample();
    this.schedule();
    return first;
  }

  /** Stops sampling; waits for a query in flight. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.inFlight) await this.inFlight.catch(() => undefined);
  }

  /** One sample now, or the one in flight: never two queries at once. */
  sample(): Promise<GpuSnapshot> {
    if (!this.inFlight) {
      this.inFlight = this.opts
        .query()
        .then((r) => this.apply(r))
        .finally(() => (this.inFlight = undefined));
    }
    return this.inFlight;
  }

  snapshot(): GpuSnapshot {
    return this.last;
  }

  /** Selected devices that may get a new job now. Empty while nvidia-smi fails. */
  healthyGpus(): GpuIdentity[] {
    return this.devices()
      .filter((d) => d.healthy)
      .map((d) => ({ index: d.index, uuid: d.uuid }));
  }

  /**
   * The selected devices of the last sample: each GPU without MIG, and each MIG instance of a
   * GPU with MIG (never that GPU itself). While nvidia-smi fails: the last ones, unhealthy.
   */
  devices(): GpuDeviceInfo[] {
    return this.last.gpus.flatMap((g): GpuDeviceInfo[] =>
      g.mig
        ? g.mig.map((i) => ({
            index: g.index,
            uuid: i.uuid,
            name: g.name,
            ...(i.memoryTotalBytes !== undefined ? { memoryTotalBytes: i.memoryTotalBytes } : {}),
            parent: g.uuid,
            profile: i.profile,
            ...(i.gpuInstanceId !== undefined ? { gpuInstanceId: i.gpuInstanceId } : {}),
            healthy: i.healthy,
          }))
        : [
            {
              index: g.index,
              uuid: g.uuid,
              name: g.name,
              ...(g.memoryTotalBytes !== undefined ? { memoryTotalBytes: g.memoryTotalBytes } : {}),
              healthy: g.healthy,
            },
          ],
    );
  }

  /**
   * Whether a device as GPU_DEVICES and the allocator name it (index as number or digits, GPU
   * UUID, or a MIG instance's UUID) may get a new job now. A GPU with MIG enabled is no device.
   */
  isHealthy(id: number | string): boolean {
    const byIndex = typeof id === 'number' || /^\d+$/.test(id);
    if (byIndex) return this.last.gpus.some((g) => g.healthy && !g.mig && g.index === Number(id));
    return this.devices().some((d) => d.healthy && d.uuid.toLowerCase() === id.toLowerCase());
  }

  /**
   * What the GPU allocator (libs/jobs GpuInventory) reads: the devices now (none while
   * nvidia-smi fails), whether one may get a job, and each change of the devices.
   */
  inventory(): {
    detect(): Promise<DeviceOnly[]>;
    isHealthy(uuid: string): boolean;
    watch(listener: (devices: DeviceOnly[]) => void): void;
  } {
    const strip = ({ healthy: _h, ...d }: GpuDeviceInfo): DeviceOnly => d;
    return {
      detect: async () => {
        const s = await this.sample();
        return s.stale ? [] : this.devices().map(strip);
      },
      isHealthy: (uuid) => this.isHealthy(uuid),
      watch: (listener) => {
        this.on('devices', (d: GpuDeviceInfo[]) => listener(d.map(strip)));
      },
    };
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.sample().finally(() => this.schedule());
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  private apply(r: NvidiaSmiResult): GpuSnapshot {
    const { selection, maxTemp } = this.opts;
    let snap: GpuSnapshot;
    if (r.ok) {
      const selected = r.gpus.filter((g) => isSelected(selection, g));
      const gpus = selected.map((g): GpuStatus => {
        const problems = gpuProblems(g, maxTemp);
        const { mig, ...reading } = g;
        return {
          ...reading,
          ...withHealth(problems),
          ...(mig
            ? {
                mig: mig
                  .filter((i) => isInstanceSelected(selection, g, i))
                  .map((i) => ({ ...i, ...withHealth(instanceProblems(i, problems)) })),
              }
            : {}),
        };
      });
      snap = {
        gpus,
        missing: missingSelected(selection, r.gpus),
        vanished: this.vanishedSince(gpus),
        sampledAt: new Date(),
        stale: false,
        durationMs: r.durationMs,
      };
      if (this.last.error) this.log.info('nvidia-smi answers again');
    } else {
      const problem: GpuProblem = { kind: 'probe', message: `${r.reason}: ${r.message}` };
      // The last good values stay, marked stale; every GPU is unhealthy until nvidia-smi answers.
      const sick = withHealth([problem]);
      const gpus = this.last.gpus.map((g) => ({
        ...g,
        ...sick,
        ...(g.mig ? { mig: g.mig.map((i) => ({ ...i, ...sick })) } : {}),
      }));
      snap = {
        gpus,
        missing: this.last.missing,
        vanished: this.last.vanished,
        sampledAt: this.last.sampledAt,
        stale: true,
        error: { reason: r.reason, message: r.message, at: new Date() },
        durationMs: r.durationMs,
      };
      // Said once per kind of failure: a host without a driver would otherwise log every interval.
      const same = this.last.error?.reason === r.reason && this.last.error.message === r.message;
      if (same) this.log.debug({ reason: r.reason, err: r.message }, 'GPU probe failed');
      else this.log.warn({ reason: r.reason, err: r.message }, 'GPU probe failed');
    }
    for (const g of snap.gpus) {
      const was = this.last.gpus.find((p) => p.uuid === g.uuid);
      if (was?.healthy !== false && !g.healthy && r.ok) {
        this.log.warn({ gpu: g.index, uuid: g.uuid, reasons: g.reasons }, 'GPU unhealthy');
      }
    }
    for (const v of (snap.vanished ?? []).filter((v) => !this.last.vanished?.includes(v))) {
      this.log.warn(
        { gpu: v.gpu, uuid: v.uuid, profile: v.profile },
        'MIG instance vanished (GPU re-partitioned): no new job goes to it',
      );
    }
    this.last = snap;
    this.opts.onSnapshot?.(snap);
    this.emit('snapshot', snap);
    const healthy = this.healthyGpus();
    const key = healthy.map((g) => g.uuid).join(',');
    if (key !== this.healthyKey) {
      this.healthyKey = key;
      this.emit('health', healthy);
    }
    if (r.ok) {
      const devices = this.devices();
      const dkey = JSON.stringify(devices.map(({ healthy: _h, ...d }) => d));
      if (dkey !== this.devicesKey) {
        this.devicesKey = dkey;
        this.emit('devices', devices);
      }
    }
    return snap;
  }

  /**
   * The vanished list after a good sample: the last one's, less instances listed again, plus
   * the instances of the last good sample that this one lacks (at most VANISHED_KEPT, newest).
   */
  private vanishedSince(gpus: GpuStatus[]): VanishedInstance[] {
    const now = new Set(gpus.flatMap((g) => (g.mig ?? []).map((i) => i.uuid)));
    const kept = (this.last.vanished ?? []).filter((v) => !now.has(v.uuid));
    const since = new Date();
    for (const g of this.last.gpus) {
      for (const i of g.mig ?? []) {
        if (!now.has(i.uuid) && !kept.some((v) => v.uuid === i.uuid))
          kept.push({ uuid: i.uuid, profile: i.profile, gpu: g.index, parent: g.uuid, since });
      }
    }
    return kept.slice(-VANISHED_KEPT);
  }
}

function withHealth(problems: GpuProblem[]): Health {
  return { healthy: problems.length === 0, problems, reasons: problems.map(describeProblem) };
}
