import {
  DelayedError,
  UnrecoverableError,
  Worker,
  type Job,
  type Queue,
  type QueueOptions as BullQueueOptions,
} from 'bullmq';
import type { Logger } from '../../../config/src';
import type { JobPayload } from '../job-record';
import type { RedisBackend } from './redis-connection';

/**
 * The one file that imports BullMQ. The two queues are made by @nestjs/bullmq (JobsModule:
 * `BullModule.forRootAsync` with `queueConfig` below, `BullModule.registerQueue`) and handed to
 * JobQueue by their Nest tokens; their workers are made here, not through @Processor providers,
 * because the set of workers changes at run time (the GPU queue's worker exists only with GPU
 * slots, and starts when a MIG re-partition brings some) and they must start only once leftovers
 * are removed and orphans recovered (JobsRuntime), while @nestjs/bullmq makes one worker per
 * @Processor provider at module init. libs/jobs/README.md, "BullMQ through @nestjs/bullmq: the
 * queues, not the workers", says what else was weighed.
 */

/** Which slots a job uses: CPU-only jobs and GPU jobs wait in separate queues. */
export type SlotKind = 'cpu' | 'gpu';
export const QUEUE_NAME: Record<SlotKind, string> = { cpu: 'gsc-cpu', gpu: 'gsc-gpu' };
const PREFIX = 'bull';

/** A BullMQ queue, as JobQueue is given it (one per SlotKind, made by @nestjs/bullmq). */
export type BullQueue = Queue;

/**
 * The queues' shared options (BullModule.forRootAsync): a connection of their own to the job
 * system's Redis, commands failing after 3 retries (API calls answer 503 rather than wait), and
 * the key prefix the workers use too.
 */
export function queueConfig(backend: RedisBackend): BullQueueOptions {
  return { connection: { ...backend.options, maxRetriesPerRequest: 3 }, prefix: PREFIX };
}

/** One pick-up of a job by this worker, as the processor sees it. */
export interface QueuedJob {
  id: string;
  data: JobPayload;
  /** Tries started so far, this one included, not counting hand-backs at shutdown. */
  tries: number;
  maxTries: number;
  setProgress(percent: number): Promise<void>;
}

/** What the processor decided about one pick-up. */
export type ProcessResult =
  | { kind: 'done' }
  /** The job failed and may run again (BullMQ retries while attempts remain). */
  | { kind: 'retry'; error: string }
  /** The job failed for good (or was cancelled: BullMQ files it under failed, reason `cancelled`). */
  | { kind: 'fail'; error: string }
  /** Not run now: back to the queue after `delayMs`; `counted: false` gives the try back. */
  | { kind: 'later'; delayMs: number; counted: boolean };

export type JobProcessor = (job: QueuedJob, signal: AbortSignal) => Promise<ProcessResult>;

/**
 * A BullMQ entry's data: the payload, plus `freeStarts` once a pick-up was given back without
 * using a try (`later` with `counted: false`: the runner unavailable, no GPU free, a shutdown).
 * BullMQ counts every start in `attemptsStarted`; the tries are that minus `freeStarts`.
 */
interface EntryData extends JobPayload {
  freeStarts?: number;
}

export interface QueueOptions {
  attempts: number;
  priority?: number;
}

export class JobQueue {
  private readonly queues: Record<SlotKind, Queue>;
  private readonly workers: Worker[] = [];
  private readonly workerOf = new Map<SlotKind, Worker>();

  /**
   * `queues` are the BullMQ queues of `QUEUE_NAME`, made with `queueConfig`; the workers get
   * connections of their own from `backend`. The queues' errors are logged from here on: Nest
   * hands the queues over as soon as it made them (promises only), before any of their I/O.
   */
  constructor(
    queues: Record<SlotKind, Queue>,
    private readonly backend: RedisBackend,
    private readonly log: Logger,
    private readonly retentionMs: number,
  ) {
    for (const kind of Object.keys(QUEUE_NAME) as SlotKind[]) {
      if (queues[kind]?.name !== QUEUE_NAME[kind]) {
        throw new Error(`JobQueue: the ${kind} queue must be '${QUEUE_NAME[kind]}'`);
      }
    }
    this.queues = queues;
    for (const q of Object.values(this.queues)) {
      q.on('error', (err) => log.warn({ err: err.message }, 'queue connection error'));
    }
  }

  async waitUntilReady(): Promise<void> {
    await Promise.all(Object.values(this.queues).map((q) => q.waitUntilReady()));
  }

  /**
   * Enqueues a job under its record id, so the id is also BullMQ's and a retry keeps it. BullMQ's
   * job name is the experiment's: what bull-board shows on each job.
   */
  async add(kind: SlotKind, payload: JobPayload, opts: QueueOptions): Promise<void> {
    const age = Math.ceil(this.retentionMs / 1000);
    await this.queues[kind].add(payload.experiment, payload, {
      jobId: payload.id,
      attempts: opts.attempts,
      priority: opts.priority,
      backoff: { type: 'fixed', delay: 1000 },
      // Finished BullMQ entries live as long as results (the sweep removes both together).
      removeOnComplete: { age },
      removeOnFail: { age },
    });
  }

  /** Removes a job that is not running; false when it is locked by a worker or already gone. */
  async remove(kind: SlotKind, id: string): Promise<boolean> {
    try {
      return (await this.queues[kind].remove(id)) === 1;
    } catch {
      return false;
    }
  }

  /**
   * Drops the lock of a job whose worker process is known to be dead (this worker's previous
   * incarnation), so the stalled-job check hands it back within one interval instead of waiting
   * out the lock's expiry.
   */
  async dropLock(kind: SlotKind, id: string): Promise<void> {
    const client = await this.queues[kind].client;
    await client.del(`${PREFIX}:${QUEUE_NAME[kind]}:${id}:lock`);
  }

  /** Counts by BullMQ state, for health and the bench. */
  async counts(kind: SlotKind): Promise<Record<string, number>> {
    return this.queues[kind].getJobCounts(
      'wait',
      'active',
      'delayed',
      'prioritized',
      'completed',
      'failed',
    );
  }

  /** The BullMQ queues themselves, for the bull-board UI (apps/worker/src/queues-ui.ts). */
  bullQueues(): Queue[] {
    return Object.values(this.queues);
  }

  /** Starts a worker for `kind` with `concurrency` slots running `processor`. */
  startWorker(kind: SlotKind, concurrency: number, processor: JobProcessor): void {
    const wrapped = async (job: Job<EntryData>, token?: string, signal?: AbortSignal) => {
      const free = Number(job.data.freeStarts ?? 0);
      const handle: QueuedJob = {
        id: job.id!,
        data: { id: job.data.id, experiment: job.data.experiment },
        tries: job.attemptsStarted - free,
        maxTries: job.opts.attempts ?? 1,
        setProgress: (p) => job.updateProgress(p),
      };
      const result = await processor(handle, signal ?? new AbortController().signal);
      switch (result.kind) {
        case 'done':
          return;
        case 'retry':
          throw new Error(result.error);
        case 'fail':
          throw new UnrecoverableError(result.error);
        case 'later':
          if (!result.counted) await job.updateData({ ...job.data, freeStarts: free + 1 });
          await job.moveToDelayed(Date.now() + result.delayMs, token);
          throw new DelayedError();
      }
    };
    const worker = new Worker<EntryData>(QUEUE_NAME[kind], wrapped, {
      connection: { ...this.backend.options, maxRetriesPerRequest: null },
      prefix: PREFIX,
      concurrency,
      // Lock renewed every 15 s; a job whose worker died is found by the stalled check. The
      // processor itself decides whether another try is allowed ("worker restarted"), so BullMQ's
      // own stalled limit is set out of the way.
      lockDuration: 30_000,
      stalledInterval: 5_000,
      maxStalledCount: 1_000,
    });
    worker.on('error', (err) => this.log.warn({ err: err.message, queue: kind }, 'worker error'));
    this.workers.push(worker);
    this.workerOf.set(kind, worker);
  }

  /** Whether a worker for `kind` was started. */
  hasWorker(kind: SlotKind): boolean {
    return this.workerOf.has(kind);
  }

  /** Resizes a started worker (the GPUs changed: a MIG re-partition); slots in use are kept. */
  setConcurrency(kind: SlotKind, concurrency: number): void {
    const worker = this.workerOf.get(kind);
    if (worker && concurrency > 0) worker.concurrency = concurrency;
  }

  /** Stops taking jobs; `force` does not wait for running ones (they were already stopped). */
  async closeWorkers(force: boolean): Promise<void> {
    // A worker closed while its connections still initialize (stopped just after it started)
    // has BullMQ emit their late "Connection is closed" as an unhandled 'error': let them
    // finish first, for a bounded time (Redis may be what is gone).
    await Promise.allSettled(
      this.workers.map((w) =>
        Promise.race([w.waitUntilReady(), new Promise((r) => setTimeout(r, 2_000).unref())]),
      ),
    );
    await Promise.allSettled(this.workers.map((w) => w.close(force)));
  }

  async close(): Promise<void> {
    await this.closeWorkers(true);
    await Promise.allSettled(Object.values(this.queues).map((q) => q.close()));
  }
}
