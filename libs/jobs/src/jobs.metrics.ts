import { defineJobMetrics, type JobMetricDefs } from '../../metrics/src/names';
import type { Registry } from '../../metrics/src/registry';
import { isFinal, JOB_STATES, type JobRecord } from './job-record';
import { QUEUE_NAME, type JobQueue, type SlotKind } from './queue/bullmq.adapter';
import type { JobRecordsRepository, StateChange } from './queue/job-records.repository';

/** How long a count of all job records is reused: a scrape every 15 s reads Redis at most once. */
const RECORD_COUNT_TTL_MS = 10_000;

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
  private recordCounts?: { at: number; value: Promise<void> };
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

  /** BullMQ counts by queue and state; also says whether the queue answers. */
  async refreshQueues(): Promise<Record<SlotKind, Record<string, number>> | undefined> {
    try {
      const kinds: SlotKind[] = ['cpu', 'gpu'];
      const counts = await Promise.all(kinds.map((k) => this.queue.counts(k)));
      kinds.forEach((k, i) => {
        for (const [state, n] of Object.entries(counts[i]))
          this.defs.bullmq.set({ queue: QUEUE_NAME[k], state }, n);
      });
      this.queueError = undefined;
      return { cpu: counts[0], gpu: counts[1] };
    } catch (err) {
      this.queueError = (err as Error).message;
      return undefined;
    }
  }

  /** gpu_sidecar_jobs from the records in Redis (reused for 10 s); call before rendering /metrics. */
  refreshRecords(): Promise<void> {
    const now = Date.now();
    if (!this.recordCounts || now - this.recordCounts.at > RECORD_COUNT_TTL_MS) {
      this.recordCounts = { at: now, value: this.countRecords() };
    }
    return this.recordCounts.value;
  }

  private async countRecords(): Promise<void> {
    let all: JobRecord[];
    try {
      all = await this.records.list({ limit: Number.MAX_SAFE_INTEGER });
    } catch {
      this.recordCounts = undefined; // try again at the next scrape
      return;
    }
    const counts = new Map<string, Record<string, number>>();
    for (const r of all) {
      const byState =
        counts.get(r.experiment) ??
        Object.fromEntries(JOB_STATES.map((s) => [s, 0] as [string, number]));
      byState[r.state] = (byState[r.state] ?? 0) + 1;
      counts.set(r.experiment, byState);
    }
    // Every state of every experiment seen, zeros included, so rate() and alerts see a series.
    this.defs.jobs.reset();
    for (const [experiment, byState] of counts)
      for (const [state, n] of Object.entries(byState))
        this.defs.jobs.set({ experiment, state }, n);
  }

  private observe({ record: r, previous }: StateChange): void {
    this.recordCounts = undefined; // counted again at the next scrape
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
