import { Counter, Gauge, Histogram, type Registry } from '../../metrics/src';
import { isFinal, JOB_STATES } from './job-record';
import { QUEUE_NAME, type JobQueue, type SlotKind } from './queue/bullmq.adapter';
import type { JobRecordsRepository, StateChange } from './queue/job-records.repository';

/**
 * The job system's metric names: BullMQ's (bull_exporter / BullMQ's own OpenTelemetry), then
 * ours.
 */
const METRIC = {
  BULLMQ_JOB_COUNT: 'bullmq_job_count',
  JOBS: 'gpu_sidecar_jobs',
  JOBS_FINISHED: 'gpu_sidecar_jobs_finished_total',
  JOB_RUN_SECONDS: 'gpu_sidecar_job_run_seconds',
  JOB_WAIT_SECONDS: 'gpu_sidecar_job_wait_seconds',
  DOCKER_UP: 'gpu_sidecar_docker_up',
} as const;

/** Queue and job metrics (JobMetrics records them; the worker's health monitor sets dockerUp). */
export interface JobMetricDefs {
  bullmq: Gauge<'queue' | 'state'>;
  jobs: Gauge<'experiment' | 'state'>;
  finished: Counter<'experiment' | 'state'>;
  run: Histogram<'experiment'>;
  wait: Histogram<'experiment'>;
  dockerUp: Gauge<string>;
}

/** Seconds, from a quick job to a long training run. */
const JOB_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400];

export function defineJobMetrics(registry: Registry): JobMetricDefs {
  const registers = [registry];
  return {
    bullmq: new Gauge({
      name: METRIC.BULLMQ_JOB_COUNT,
      help: 'BullMQ jobs by queue and state (the same in every worker of one Redis: use max)',
      labelNames: ['queue', 'state'] as const,
      registers,
    }),
    jobs: new Gauge({
      name: METRIC.JOBS,
      help: 'Job records by experiment and state (shared by the workers of one Redis: use max)',
      labelNames: ['experiment', 'state'] as const,
      registers,
    }),
    finished: new Counter({
      name: METRIC.JOBS_FINISHED,
      help: 'Jobs this worker process moved to a final state (succeeded, failed, cancelled)',
      labelNames: ['experiment', 'state'] as const,
      registers,
    }),
    run: new Histogram({
      name: METRIC.JOB_RUN_SECONDS,
      help: 'Job run time, start to end, for jobs this worker process ended',
      labelNames: ['experiment'] as const,
      buckets: JOB_BUCKETS,
      registers,
    }),
    wait: new Histogram({
      name: METRIC.JOB_WAIT_SECONDS,
      help: 'Time from submission to start, for jobs this worker process started',
      labelNames: ['experiment'] as const,
      buckets: JOB_BUCKETS,
      registers,
    }),
    dockerUp: new Gauge({
      name: METRIC.DOCKER_UP,
      help: '1 when the Docker Engine (DOCKER_HOST) answers',
      registers,
    }),
  };
}

const seconds = (from: string | null, to: string | null): number | undefined => {
  if (!from || !to) return undefined;
  const s = (Date.parse(to) - Date.parse(from)) / 1000;
  return Number.isFinite(s) && s >= 0 ? s : undefined;
};

/**
 * Queue and job metrics. Counters and histograms come from the state changes this process makes
 * (each change happens in exactly one worker, so sums over workers are right); the gauges
 * (bullmq_job_count, gpu_sidecar_jobs) are read from Redis before each scrape and are the same on
 * every worker of one Redis.
 */
export class JobMetrics {
  readonly defs: JobMetricDefs;
  private readonly onState = (c: StateChange) => this.observe(c);
  /** The last queue count's failure, while it lasts (for /health/ready). */
  queueError?: string;

  constructor(
    registry: Registry,
    private readonly records: JobRecordsRepository,
    private readonly queue: JobQueue,
  ) {
    this.defs = defineJobMetrics(registry);
    records.bus.on('state', this.onState);
  }

  /** BullMQ counts by queue name and state; also says whether the queue answers. */
  async refreshQueues(): Promise<Record<string, Record<string, number>> | undefined> {
    try {
      const kinds: SlotKind[] = ['cpu', 'gpu'];
      const counts = await Promise.all(kinds.map((k) => this.queue.counts(k)));
      const byQueue = Object.fromEntries(kinds.map((k, i) => [QUEUE_NAME[k], counts[i]]));
      for (const [queue, byState] of Object.entries(byQueue))
        for (const [state, n] of Object.entries(byState)) this.defs.bullmq.set({ queue, state }, n);
      this.queueError = undefined;
      return byQueue;
    } catch (err) {
      this.queueError = (err as Error).message;
      return undefined;
    }
  }

  /**
   * gpu_sidecar_jobs from the counts Redis keeps with every record change (one small hash, not
   * every record); call before rendering /metrics.
   */
  async refreshRecords(): Promise<void> {
    let counts: Map<string, Map<string, number>>;
    try {
      counts = await this.records.counts();
    } catch {
      return; // Redis away: the last values stay, /health says why
    }
    // Every state of every experiment seen, zeros included, so rate() and alerts see a series.
    this.defs.jobs.reset();
    for (const [experiment, byState] of counts)
      for (const state of JOB_STATES)
        this.defs.jobs.set({ experiment, state }, byState.get(state) ?? 0);
  }

  private observe({ record: r, previous }: StateChange): void {
    const experiment = r.experiment;
    if (r.state === 'running' && previous === 'queued') {
      const wait = seconds(r.createdAt, r.startedAt);
      if (wait !== undefined) this.defs.wait.observe({ experiment }, wait);
    } else if (isFinal(r.state) && previous !== undefined && !isFinal(previous)) {
      this.defs.finished.inc({ experiment, state: r.state });
      const run = seconds(r.startedAt, r.finishedAt);
      if (run !== undefined && previous === 'running') this.defs.run.observe({ experiment }, run);
    }
  }

  close(): void {
    this.records.bus.off('state', this.onState);
  }
}
