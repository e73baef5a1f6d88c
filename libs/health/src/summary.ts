import type { ContainerSnapshot } from './containers/probe';
import type { GpuSnapshot } from './gpu/sampler';
import type { DiskStatus } from './host/disk';
import type { RedisStatus } from './redis';

export interface HealthInputs {
  gpu?: GpuSnapshot;
  containers?: ContainerSnapshot;
  redis?: RedisStatus;
  disk?: DiskStatus;
  /** Why DATA_FOLDER's free space could not be read (then there is no `disk`). */
  diskError?: string;
  /**
   * The Docker Engine; `required` when an installed experiment runs in Docker, `experiments`
   * names them.
   */
  docker?: { reachable: boolean; reason?: string; required: boolean; experiments?: string[] };
  /** Whether HEALTH_CONTAINERS names any container (then Docker matters even if not required). */
  servicesWatched?: boolean;
  /** The BullMQ queue: whether its last count answered. */
  queue?: { ok: boolean; error?: string };
  /**
   * Experiment files the last reading of EXPERIMENTS_DIR could not use, one line each: the jobs
   * of every other experiment (and the version loaded before of that one) still run.
   */
  experiments?: string[];
}

export interface HealthSummary {
  /** `ok`: nothing wrong; `degraded`: jobs can run but something needs a look; `down`: not ready. */
  status: 'ok' | 'degraded' | 'down';
  /** Whether the worker should take new jobs (Redis healthy and DATA_FOLDER above MIN_FREE_DISK). */
  ready: boolean;
  /** One line per problem, saying what is wrong. */
  problems: string[];
}

/**
 * Pure: folds the probes' last results into one verdict for /health and /health/ready.
 * Redis down/misconfigured, the queue not answering, or a full or unreadable DATA_FOLDER make
 * the worker not ready. GPU, container and Docker problems degrade it: jobs that need none of
 * them still run. Docker unreachable while a docker experiment is installed is such a problem,
 * not a reason to refuse every job: the docker experiments' jobs wait in the queue until Docker
 * answers, and the problem line names them. So is an experiment file that a reload could not
 * use: every job still runs (that experiment's with the version loaded before, if any).
 */
export function summarizeHealth(h: HealthInputs): HealthSummary {
  const fatal: string[] = [];
  const warn: string[] = [];
  if (h.diskError) fatal.push(`disk: ${h.diskError}`);
  if (h.redis && !h.redis.healthy) fatal.push(...h.redis.problems.map((p) => `redis: ${p}`));
  if (h.queue && !h.queue.ok) fatal.push(`queue: not answering: ${h.queue.error ?? 'unknown'}`);
  const dockerDown = h.docker !== undefined && !h.docker.reachable;
  if (dockerDown && h.docker!.required) {
    const names = h.docker!.experiments?.length ? ` (${h.docker!.experiments.join(', ')})` : '';
    warn.push(
      `docker: ${h.docker!.reason ?? 'unreachable'}: docker experiments${names} wait until it ` +
        'answers; the others run',
    );
  }
  // Docker matters only when a docker experiment or HEALTH_CONTAINERS needs it.
  const dockerMatters = h.docker === undefined || h.docker.required || h.servicesWatched === true;
  if (h.disk?.belowThreshold) {
    const t = h.disk.threshold;
    fatal.push(
      `disk: ${h.disk.path} has ${h.disk.freeBytes} bytes (${h.disk.freePercent.toFixed(1)} %) free, ` +
        `under MIN_FREE_DISK ${'percent' in t ? `${t.percent}%` : `${t.bytes} bytes`}`,
    );
  }
  if (h.gpu) {
    if (h.gpu.error) {
      const hint =
        h.gpu.error.reason === 'missing' ? ' (set GPU_DEVICES=none on a host without GPUs)' : '';
      warn.push(`gpu: nvidia-smi ${h.gpu.error.reason}: ${h.gpu.error.message}${hint}`);
    }
    for (const g of h.gpu.gpus) {
      if (!g.healthy && !h.gpu.error)
        warn.push(`gpu ${g.index} (${g.uuid}): ${g.reasons.join('; ')}`);
      // A MIG instance's own problem (its GPU's problems are said once, above).
      for (const i of g.healthy && !h.gpu.error ? (g.mig ?? []) : []) {
        if (!i.healthy)
          warn.push(`gpu ${g.index} MIG ${i.uuid} (${i.profile}): ${i.reasons.join('; ')}`);
      }
    }
    for (const id of h.gpu.missing)
      warn.push(`gpu ${id}: in GPU_DEVICES but not seen by nvidia-smi`);
  }
  if (h.containers) {
    if (!h.containers.ok && h.containers.error) {
      if (dockerMatters && !(dockerDown && h.docker!.required))
        warn.push(`docker: ${h.containers.error.reason}: ${h.containers.error.message}`);
    } else {
      for (const c of h.containers.containers) {
        if (c.kind !== 'service') continue;
        if (!c.running) {
          warn.push(
            `container ${c.name}: ${c.status}` +
              (c.exitCode !== undefined
                ? ` (exit ${c.exitCode}${c.oomKilled ? ', OOM killed' : ''})`
                : ''),
          );
        } else if (c.health === 'unhealthy') warn.push(`container ${c.name}: unhealthy`);
      }
    }
  }
  for (const line of h.experiments ?? []) warn.push(`experiments: ${line}`);
  return {
    status: fatal.length > 0 ? 'down' : warn.length > 0 ? 'degraded' : 'ok',
    ready: fatal.length === 0,
    problems: [...fatal, ...warn],
  };
}
