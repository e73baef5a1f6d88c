import { EventEmitter } from 'node:events';
import type { GpuSelection } from '../../../config/src/parse';
import type { Logger } from '../../../config/src/logger';
import { silentLogger } from '../../../config/src/logger';
import {
  describeProblem,
  gpuProblems,
  isSelected,
  missingSelected,
  type GpuProblem,
} from './health';
import type { GpuProbeErrorReason, GpuQuery, GpuReading, NvidiaSmiResult } from './nvidia-smi';

export interface GpuStatus extends GpuReading {
  healthy: boolean;
  problems: GpuProblem[];
  /** Human-readable problems, for /health and `gpu-sidecar status`. */
  reasons: string[];
}

export interface GpuProbeError {
  reason: GpuProbeErrorReason;
  message: string;
  at: Date;
}

/** What the last sample says. */
export interface GpuSnapshot {
  /** Selected GPUs from the last good sample (with health as of now). */
  gpus: GpuStatus[];
  /** GPU_DEVICES entries that nvidia-smi did not report (a lost GPU). */
  missing: string[];
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
 * - `health` (GpuIdentity[] of healthy GPUs) when that set changes, for the allocator.
 */
export class GpuSampler extends EventEmitter {
  private last: GpuSnapshot = { gpus: [], missing: [], stale: true };
  private timer?: NodeJS.Timeout;
  private inFlight?: Promise<GpuSnapshot>;
  private running = false;
  private healthyKey = '';
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

  /** Selected GPUs that may get a new job now. Empty while nvidia-smi fails. */
  healthyGpus(): GpuIdentity[] {
    return this.last.gpus.filter((g) => g.healthy).map((g) => ({ index: g.index, uuid: g.uuid }));
  }

  /**
   * Whether a GPU named as GPU_DEVICES and the allocator name it (index as number or digits,
   * or UUID) may get a new job now.
   */
  isHealthy(id: number | string): boolean {
    const byIndex = typeof id === 'number' || /^\d+$/.test(id);
    return this.last.gpus.some(
      (g) =>
        g.healthy && (byIndex ? g.index === Number(id) : g.uuid.toLowerCase() === id.toLowerCase()),
    );
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
      const gpus = selected.map((g) => {
        const problems = gpuProblems(g, maxTemp);
        return {
          ...g,
          healthy: problems.length === 0,
          problems,
          reasons: problems.map(describeProblem),
        };
      });
      snap = {
        gpus,
        missing: missingSelected(selection, r.gpus),
        sampledAt: new Date(),
        stale: false,
        durationMs: r.durationMs,
      };
      if (this.last.error) this.log.info('nvidia-smi answers again');
    } else {
      const problem: GpuProblem = { kind: 'probe', message: `${r.reason}: ${r.message}` };
      // The last good values stay, marked stale; every GPU is unhealthy until nvidia-smi answers.
      const gpus = this.last.gpus.map((g) => ({
        ...g,
        healthy: false,
        problems: [problem],
        reasons: [describeProblem(problem)],
      }));
      snap = {
        gpus,
        missing: this.last.missing,
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
    this.last = snap;
    this.opts.onSnapshot?.(snap);
    this.emit('snapshot', snap);
    const healthy = this.healthyGpus();
    const key = healthy.map((g) => g.uuid).join(',');
    if (key !== this.healthyKey) {
      this.healthyKey = key;
      this.emit('health', healthy);
    }
    return snap;
  }
}
