import { randomUUID } from 'node:crypto';
import { rename } from 'node:fs/promises';
import path from 'node:path';
import type { DiskThreshold, Logger } from '../../config/src';
import type { ExperimentCatalog } from './experiments/catalog';
import type { Experiment } from './experiments/experiment';
import type { JobLedger } from './job-ledger';
import { isFinal, type JobRecord, type JobState } from './job-record';
import type { JobQueue, SlotKind } from './queue/bullmq.adapter';
import type { JobRecordsRepository } from './queue/job-records.repository';
import { environHas } from './runner/proc-scope';
import { isNoSpace, type ResultsStore } from './store/results.store';

/** Problems a caller can fix; the controller maps each to its status code. */
export class JobRequestError extends Error {
  constructor(
    readonly status: 400 | 404 | 409 | 507,
    message: string,
  ) {
    super(message);
  }
}

export interface UploadedInput {
  originalname: string;
  path: string;
}

export interface SubmitRequest {
  experiment: unknown;
  params?: unknown;
  priority?: unknown;
  key?: unknown;
  files?: UploadedInput[];
}

/** A submission that passed every check, as submit() goes on with it. */
export interface CheckedSubmission {
  exp: Experiment;
  params: unknown;
  priority: number | undefined;
  key: string | undefined;
}

/** How deep params may nest (objects and arrays); deeper ones are refused with 400. */
export const MAX_PARAMS_DEPTH = 64;

/**
 * How deep `value` nests (a scalar is 0, `{}` and `[]` are 1), counted without recursion and
 * only up to `max + 1`: a value nested 45,000 levels deep costs no more than one at the limit.
 */
export function nestingDepth(value: unknown, max: number): number {
  let deepest = 0;
  const pending: [unknown, number][] = [[value, 0]];
  while (pending.length > 0) {
    const [v, d] = pending.pop()!;
    if (v === null || typeof v !== 'object') continue;
    const here = d + 1;
    deepest = Math.max(deepest, here);
    if (here > max) return here;
    for (const child of Object.values(v)) pending.push([child, here]);
  }
  return deepest;
}

export interface JobsServiceDeps {
  catalog: ExperimentCatalog;
  /** Every change of a job's state after its submission, in Redis and job.json. */
  ledger: JobLedger;
  /** Records made, read and removed here; their changes of state go through the ledger. */
  records: Omit<JobRecordsRepository, 'transition'>;
  queue: JobQueue;
  /** Job folders made and removed here; job.json changes go through the ledger. */
  store: Omit<ResultsStore, 'writeRecord' | 'writeFinal'>;
  /**
   * Why no device of this worker could ever run the experiment's GPU request (count, memory,
   * MIG profile), naming what it has; undefined when one could (or it needs no GPU).
   */
  gpuRefusal(exp: Experiment): string | undefined;
  minFreeDisk: DiskThreshold;
  resultsTtlMs: number;
  log: Logger;
}

/** Fields only the daemon uses; never shown by the API. */
const INTERNAL = ['pid', 'key', 'priority'] as const;

/** The public view of a record (`GET /jobs/:id` in docs/ARCHITECTURE.md). */
export function publicRecord(rec: JobRecord): JobRecord {
  const out = { ...rec } as Record<string, unknown>;
  for (const k of INTERNAL) delete out[k];
  return out as unknown as JobRecord;
}

export const slotKind = (gpus: number): SlotKind => (gpus > 0 ? 'gpu' : 'cpu');

/** Submitting, reading, listing and cancelling jobs; retention. */
export class JobsService {
  constructor(private readonly d: JobsServiceDeps) {}

  /**
   * Everything that can refuse a submission before anything is stored: free disk, the
   * experiment, the params (nesting depth first, then the experiment's JSON Schema), priority,
   * GPUs, key. Multipart uploads run it when their first file part arrives, so a refused
   * submission never writes a byte; submit() runs it again (cheap: the disk reading is reused).
   */
  async check(req: SubmitRequest): Promise<CheckedSubmission> {
    const shortage = await this.d.store.diskShortage(this.d.minFreeDisk);
    if (shortage)
      throw new JobRequestError(
        507,
        `${shortage}; free some space (or lower MIN_FREE_DISK) and submit again`,
      );
    if (typeof req.experiment !== 'string' || req.experiment === '') {
      throw new JobRequestError(400, 'experiment is required: the name of an installed experiment');
    }
    const exp = this.d.catalog.get(req.experiment);
    if (!exp) {
      const known =
        this.d.catalog
          .list()
          .map((e) => e.name)
          .join(', ') || 'none';
      throw new JobRequestError(
        404,
        `experiment '${req.experiment.slice(0, 100)}' is not installed (installed: ${known})`,
      );
    }
    const params = req.params ?? {};
    // Before the schema: validating (and later writing) params nested thousands deep recurses
    // once per level and would overflow the stack (a 500, and a record left failed).
    const depth = nestingDepth(params, MAX_PARAMS_DEPTH);
    if (depth > MAX_PARAMS_DEPTH) {
      throw new JobRequestError(
        400,
        `params are nested more than ${MAX_PARAMS_DEPTH} levels deep; flatten them (at most ${MAX_PARAMS_DEPTH})`,
      );
    }
    // Against this version's schema: the file may change while this submission goes on.
    const bad = this.d.catalog.validateParams(exp, params);
    if (bad) throw new JobRequestError(400, `${bad.field} ${bad.problem}`);
    const priority = parsePriority(req.priority);
    const noGpu = exp.gpus > 0 ? this.d.gpuRefusal(exp) : undefined;
    if (noGpu) throw new JobRequestError(400, noGpu);
    if (
      req.key !== undefined &&
      (typeof req.key !== 'string' || !/^[\x21-\x7e]{1,200}$/.test(req.key))
    ) {
      throw new JobRequestError(400, 'key must be 1-200 printable characters without spaces');
    }
    return { exp, params, priority, key: req.key };
  }

  async submit(req: SubmitRequest): Promise<{ record: JobRecord; created: boolean }> {
    const { exp, params, priority, key } = await this.check(req);
    const id = randomUUID();
    if (key) {
      const existing = await this.d.records.claimKey(key, id, this.d.resultsTtlMs);
      if (existing) {
        const rec = await this.d.records.get(existing);
        if (rec) return { record: rec, created: false };
      }
    }
    const record: JobRecord = {
      id,
      experiment: exp.name,
      state: 'queued',
      progress: 0,
      worker: null,
      gpu: null,
      attempts: 0,
      createdAt: new Date().toISOString(),
      startedAt: null,
      finishedAt: null,
      exitCode: null,
      error: null,
      ...(priority !== undefined ? { priority } : {}),
      ...(key ? { key } : {}),
    };
    // Folder and record first (side by side), the queue entry last: a worker that picks the job
    // up finds both. If anything fails, the record is marked failed rather than left queued.
    try {
      const [paths] = await Promise.all([
        this.d.store.create(record, params),
        this.d.records.create(record),
      ]);
      for (const f of req.files ?? []) {
        await rename(f.path, path.join(paths.input, safeName(f.originalname)));
      }
      await this.d.queue.add(
        slotKind(exp.gpus),
        { id, experiment: exp.name },
        { attempts: exp.attempts, priority },
      );
    } catch (err) {
      // Never left `queued` with no queue entry (it would wait forever): marked failed, in Redis
      // and on disk. Redis may be what failed: this waits for it in the background (patient),
      // while the caller hears 503 and may submit again.
      if (isNoSpace(err)) {
        // Refused before it reached the queue (the disk filled up since the last free-space
        // reading): no trace is left, as for any other 507.
        await this.forget(record);
        throw new JobRequestError(
          507,
          `disk full: no space left in ${this.d.store.root}; free some space and submit again`,
        );
      }
      void this.abandon(record, key);
      throw err;
    }
    return { record, created: true };
  }

  private async forget(record: JobRecord): Promise<void> {
    await Promise.allSettled([
      this.d.records.delete(record),
      this.d.store.remove(record.experiment, record.id),
    ]);
  }

  /** A submission that failed half-way: its record ends failed and its key is freed. */
  private async abandon(record: JobRecord, key: string | undefined): Promise<void> {
    try {
      const t = await this.d.ledger.change(
        record,
        ['queued'],
        {
          state: 'failed',
          error: 'not queued: submission failed',
          finishedAt: new Date().toISOString(),
        },
        { patient: true },
      );
      if (key) await this.d.records.releaseKey(key);
      if (t?.changed) await t.written;
      // Redis never heard of it: the folder would be an orphan no retention sweep finds.
      else if (!t) await this.d.store.remove(record.experiment, record.id);
    } catch (err) {
      this.d.log.warn(
        { job: record.id, err: (err as Error).message },
        'failed submission not marked',
      );
    }
  }

  async get(id: string): Promise<JobRecord> {
    const rec = await this.d.records.get(id);
    if (!rec) throw new JobRequestError(404, `no job '${id}'`);
    return rec;
  }

  list(filter: { experiment?: string; state?: JobState; limit: number }): Promise<JobRecord[]> {
    return this.d.records.list(filter);
  }

  /**
   * A queued job is marked cancelled and taken off the queue (if a worker picked it up in
   * between, the worker sees the mark and does not run it). A running one is asked to stop on
   * whichever worker process runs it; its record turns `cancelled` when the process is gone.
   */
  async cancel(id: string): Promise<JobRecord> {
    const rec = await this.get(id);
    if (isFinal(rec.state)) return rec;
    const t = await this.d.ledger.change(rec, ['queued'], {
      state: 'cancelled',
      finishedAt: new Date().toISOString(),
    });
    if (t?.changed) {
      await t.written;
      await this.removeFromQueue(id);
      return t.record;
    }
    await this.d.records.publishCancel(id);
    return this.waitForEnd(id, 5_000);
  }

  /**
   * Removes a job's BullMQ entry from whichever queue holds it. The queue was chosen by the
   * experiment's `gpus` at submission; its file may have changed since (or gone), so the current
   * version cannot say which: a cancelled entry left in the other queue would be picked up, and
   * could wait there for a GPU it will never use. Ids are unique across both queues.
   */
  private async removeFromQueue(id: string): Promise<void> {
    await Promise.all(SLOT_KINDS.map((kind) => this.d.queue.remove(kind, id)));
  }

  /** Resolves with the record once it is final, or as it is after `ms`. */
  async waitForEnd(id: string, ms: number): Promise<JobRecord> {
    return new Promise<JobRecord>((resolve, reject) => {
      const done = (rec: JobRecord) => {
        clearTimeout(timer);
        this.d.records.bus.off(`event:${id}`, onEvent);
        resolve(rec);
      };
      const onEvent = (rec: JobRecord) => {
        if (isFinal(rec.state)) done(rec);
      };
      const timer = setTimeout(() => {
        this.get(id).then(done, reject);
      }, ms);
      this.d.records.bus.on(`event:${id}`, onEvent);
      this.get(id).then((rec) => isFinal(rec.state) && done(rec), reject);
    });
  }

  /** Jobs the retention sweep could not remove, by id: how many sweeps failed on each. */
  private readonly sweepFailures = new Map<string, number>();
  private sweeping?: Promise<number>;
  private nextSweep?: { now: number; done: Promise<number> };
  private sweepStopped = false;

  /** Jobs a sweep failed to remove, counted over this process's life (GET /metrics has none). */
  sweepFailed = 0;

  /**
   * Removes finished jobs older than RESULTS_TTL: folder, queue entry and record together. A job
   * whose removal fails (a folder its job made that cannot be removed, or not within removeTree's
   * time) is logged, counted and left for the next sweep (hourly: never a tight retry loop), and
   * the sweep goes on with the next one: one hostile job keeps neither the others nor the disk
   * from being freed. Its first failure is logged, then the 2nd, 4th, 8th... (one line each).
   * One sweep at a time: a call while one runs waits for it, then sweeps (calls meanwhile share
   * that one waiting sweep, with the latest `now`).
   */
  sweep(now = Date.now()): Promise<number> {
    if (!this.sweeping) {
      this.sweeping = this.sweepOnce(now).finally(() => {
        this.sweeping = undefined;
      });
      return this.sweeping;
    }
    if (this.nextSweep) {
      this.nextSweep.now = Math.max(this.nextSweep.now, now);
      return this.nextSweep.done;
    }
    const next = { now, done: Promise.resolve(0) };
    next.done = this.sweeping
      .catch(() => 0)
      .then(() => {
        this.nextSweep = undefined;
        return this.sweep(next.now);
      });
    this.nextSweep = next;
    return next.done;
  }

  /** The running sweep, if any, stops before its next job (the worker is closing). */
  stopSweeping(): void {
    this.sweepStopped = true;
  }

  private async sweepOnce(now: number): Promise<number> {
    let removed = 0;
    let failed = 0;
    for (const id of await this.d.records.createdBefore(now - this.d.resultsTtlMs)) {
      if (this.sweepStopped) break;
      try {
        const rec = await this.d.records.get(id);
        if (!rec || !isFinal(rec.state)) continue;
        await this.d.store.remove(rec.experiment, id);
        await this.removeFromQueue(id);
        await this.d.records.delete(rec);
        this.sweepFailures.delete(id);
        removed++;
      } catch (err) {
        failed++;
        this.sweepFailed++;
        const tries = (this.sweepFailures.get(id) ?? 0) + 1;
        this.sweepFailures.set(id, tries);
        // 1, 2, 4, 8...: a job that fails every hour is not one line an hour for ever.
        if ((tries & (tries - 1)) === 0) {
          this.d.log.warn(
            { job: id, tries, err: (err as Error).message },
            'retention: a job could not be removed; left for the next sweep',
          );
        }
      }
    }
    if (removed || failed) this.d.log.info({ removed, failed }, 'retention: old jobs removed');
    return removed;
  }

  /**
   * At start: jobs this worker (same WORKER_NAME) was running when it died are orphans. Their
   * leftover process group is killed, and their queue lock dropped so the stalled check hands them
   * back at once; the executor then retries them or fails them with "worker restarted".
   * Their containers (Docker jobs) were already stopped and removed by the Docker runner's
   * reconciliation, which JobsRuntime runs just before this: a job handed back here can never
   * meet its old container still running.
   */
  async recoverOrphans(workerName: string): Promise<number> {
    const running = await this.d.records.listByState('running');
    let n = 0;
    for (const rec of running.filter((r) => r.worker === workerName)) {
      const pid = rec.pid;
      // Still that job's process (its environment names the job), not a reused pid.
      if (pid && environHas(pid, `JOB_ID=${rec.id}`)) {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      // Both queues, as in removeFromQueue: the experiment's `gpus` may differ from submission's.
      for (const kind of SLOT_KINDS) await this.d.queue.dropLock(kind, rec.id);
      n++;
    }
    if (n)
      this.d.log.warn(
        { jobs: n },
        'jobs left running by a previous run of this worker are handed back',
      );
    return n;
  }
}

const SLOT_KINDS: SlotKind[] = ['cpu', 'gpu'];

function parsePriority(p: unknown): number | undefined {
  if (p === undefined || p === null || p === '') return undefined;
  const n = typeof p === 'string' ? Number(p) : p;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 1000) {
    throw new JobRequestError(400, 'priority must be a whole number from 1 (first) to 1000');
  }
  return n;
}

/** An upload's file name reduced to one safe path segment inside input/. */
function safeName(name: string): string {
  const base = path.basename(name.replace(/\\/g, '/')).replace(/[^\w.+-]/g, '_');
  return base === '' || base === '.' || base === '..' ? 'upload' : base.slice(0, 200);
}
