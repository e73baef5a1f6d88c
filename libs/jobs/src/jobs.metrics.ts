import { defineJobMetrics, type JobMetricDefs, type Registry } from '../../metrics/src';
import { isFinal, JOB_STATES } from './job-record';
import { QUEUE_NAME, type JobQueue, type SlotKind } from './queue/bullmq.adapter';
import type { JobRecordsRepository, StateChange } from './queue/job-records.repository';

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
