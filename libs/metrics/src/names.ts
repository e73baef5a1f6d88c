import { Counter, Gauge, Histogram, type Registry } from './registry';

/** The job system's metric names: BullMQ's (bull_exporter / BullMQ's own OpenTelemetry), then ours. */
export const METRIC = {
  BULLMQ_JOB_COUNT: 'bullmq_job_count',
  JOBS: 'gpu_sidecar_jobs',
  JOBS_FINISHED: 'gpu_sidecar_jobs_finished_total',
  JOB_RUN_SECONDS: 'gpu_sidecar_job_run_seconds',
  JOB_WAIT_SECONDS: 'gpu_sidecar_job_wait_seconds',
  DOCKER_UP: 'gpu_sidecar_docker_up',
} as const;

/** Queue and job metrics (libs/jobs/src/jobs.metrics.ts records them). */
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
