import type { Logger } from '../../config/src';
import type { ExperimentCatalog } from './experiments/catalog';
import { gpuRequestOf, type Experiment } from './experiments/experiment';
import type { GpuAllocator, GpuDevice } from './gpu-allocator';
import type { Ending, JobLedger } from './job-ledger';
import { isFinal, type JobRecord } from './job-record';
import type { JobProcessor, ProcessResult, QueuedJob } from './queue/bullmq.adapter';
import type { JobRecordsRepository } from './queue/job-records.repository';
import type { RunOutcome, Runner } from './runner/runner';
import { DISK_FULL, isNoSpace, type ResultsStore } from './store/results.store';

const SHUTDOWN = 'worker shutting down';
const CANCELLED = 'cancelled';
/** How soon a job whose runner is unavailable (Docker unreachable) is looked at again. */
const UNAVAILABLE_RETRY_MS = 2_000;
/**
 * What BullMQ is told of a job whose record has ended: `done` (completed) only for a success. A
 * cancelled job ends as failed with reason `cancelled`, so bull-board lists it under Failed, not
 * Completed; either way BullMQ never runs it again (`fail` is unrecoverable). The record keeps its
 * own state (`cancelled`): this is only BullMQ's entry.
 */
function bullEnding(rec: Pick<JobRecord, 'state' | 'error'>): ProcessResult {
  if (rec.state === 'succeeded') return { kind: 'done' };
  return { kind: 'fail', error: rec.state === 'cancelled' ? CANCELLED : (rec.error ?? 'failed') };
}

/** Endings wait out a Redis restart rather than being lost. */
const PATIENT = { patient: true };
type FinalState = Ending['state'];

export interface ExecutorDeps {
  catalog: ExperimentCatalog;
  /** Every change of a job's state, in Redis and job.json. */
  ledger: JobLedger;
  /** Reads only: records, and cancels from any process. */
  records: Pick<JobRecordsRepository, 'get' | 'bus'>;
  /** Reads only: the job's folder, its exit mark, its job.json, free space. */
  store: Pick<ResultsStore, 'paths' | 'exitedOk' | 'readRecord' | 'isFull'>;
  runners: Map<string, Runner>;
  gpus: GpuAllocator;
  workerName: string;
  user: { uid: number; gid?: number };
  log: Logger;
}

/**
 * Runs one pick-up of a job: state `running`, the runner, then the ending. Every ending releases
 * the GPUs. Each change of state goes through the ledger; an ending is `disk-first` (fsynced
 * job.json, after the output for `succeeded`, then Redis): what the API reports as ended is
 * already on disk.
 */
export class JobExecutor {
  private readonly running = new Map<string, AbortController>();
  /** The devices of each running job, and why a job was stopped for losing one (MIG). */
  private readonly devicesOf = new Map<string, string[]>();
  private readonly lostDevice = new Map<string, string>();
  private readonly onCancel = (id: string) => this.running.get(id)?.abort(CANCELLED);

  constructor(private readonly d: ExecutorDeps) {
    d.records.bus.on('cancel', this.onCancel);
  }

  get active(): number {
    return this.running.size;
  }

  readonly process: JobProcessor = async (job, signal) => {
    // The experiment as installed now: each try runs the version current when it starts, and
    // keeps it to its end whatever happens to the file meanwhile (docs/EXPERIMENTS.md).
    const exp = this.d.catalog.get(job.data.experiment);
    const runner = exp && this.d.runners.get(exp.runner);
    if (job.tries > 1 || !exp || !runner) {
      // The uncommon paths read the record first.
      const rec = await this.d.records.get(job.id, PATIENT);
      if (!rec) return { kind: 'done' };
      if (isFinal(rec.state)) return bullEnding(rec);
      if (!exp)
        return this.end(rec, 'failed', {
          error:
            `experiment '${rec.experiment}' is not installed on ${this.d.workerName} ` +
            '(no file in its EXPERIMENTS_DIR defines it now)',
        });
      if (!runner)
        return this.end(rec, 'failed', { error: `no ${exp.runner} runner on this worker` });
      // A worker died after writing the final job.json but before Redis heard: adopt the disk.
      const onDisk = await this.d.store.readRecord(rec.experiment, rec.id);
      if (onDisk && isFinal(onDisk.state)) return this.adopt(onDisk);
      const finished = await this.finishedBefore(job);
      if (finished) return finished;
      // Started before, and the worker that ran it went away mid-run, with no try left.
      if (job.tries > job.maxTries) return this.end(rec, 'failed', { error: 'worker restarted' });
    }
    const down = await runner.unavailable?.();
    if (down) {
      // Waits in the queue (the try is given back) until the runner can start jobs again; one
      // cancelled meanwhile is dropped.
      const rec = await this.d.records.get(job.id, PATIENT);
      if (!rec) return { kind: 'done' };
      if (isFinal(rec.state)) return bullEnding(rec);
      this.warnOnce(`${exp.runner} jobs wait: ${down}`);
      return { kind: 'later', delayMs: UNAVAILABLE_RETRY_MS, counted: false };
    }
    // Again once the runner is available: the Docker runner's reconciliation, which may have run
    // just now, is what marks a container that finished while no worker watched.
    const finished = await this.finishedBefore(job);
    if (finished) return finished;
    const gpus = this.d.gpus.acquire(gpuRequestOf(exp));
    if (!gpus) return { kind: 'later', delayMs: 1000, counted: false };
    try {
      return await this.runAttempt(job, exp, gpus, runner, signal);
    } finally {
      this.d.gpus.release(gpus);
    }
  };

  /**
   * A try of this job exited 0 (its `logs/exited-0` mark) but its worker died before recording
   * the end: it is recorded succeeded now, never run a second time. Undefined: run it.
   */
  private async finishedBefore(job: QueuedJob): Promise<ProcessResult | undefined> {
    if (!(await this.d.store.exitedOk(job.data.experiment, job.id))) return undefined;
    const rec = await this.d.records.get(job.id, PATIENT);
    if (!rec) return { kind: 'done' };
    if (isFinal(rec.state)) return bullEnding(rec);
    this.d.log.warn(
      { job: rec.id, experiment: rec.experiment },
      'job had exited 0 before its worker stopped: recorded succeeded, not run again',
    );
    return this.end(rec, 'succeeded', { exitCode: 0, progress: 100, error: null });
  }

  private lastWarning = { text: '', at: 0 };

  /** The same warning at most once a minute, so a long outage does not flood the log. */
  private warnOnce(text: string): void {
    const now = Date.now();
    if (text === this.lastWarning.text && now - this.lastWarning.at < 60_000) return;
    this.lastWarning = { text, at: now };
    this.d.log.warn(text);
  }

  private async runAttempt(
    job: QueuedJob,
    exp: Experiment,
    gpus: string[],
    runner: Runner,
    bullSignal: AbortSignal,
  ): Promise<ProcessResult> {
    // Compare-and-set: a job cancelled (or removed) while queued does not start.
    const started = await this.d.ledger.change(
      job,
      ['queued', 'running'],
      {
        state: 'running',
        startedAt: new Date().toISOString(),
        worker: this.d.workerName,
        gpu: gpus.length ? gpus.map((id) => gpuLabel(id, this.d.gpus.device(id))).join(',') : null,
        attempts: job.tries,
        progress: 0,
        exitCode: null,
        error: null,
      },
      PATIENT,
    );
    if (!started) return { kind: 'done' };
    // Cancelled (or ended elsewhere) before it could start: BullMQ files it as the record says.
    if (!started.changed)
      return isFinal(started.record.state) ? bullEnding(started.record) : { kind: 'done' };
    let rec = started.record;
    // The running record is written beside the start, not before it: Redis already says running.
    const runningWritten = started.written.catch(() => undefined);
    const ctl = new AbortController();
    const fromBull = () => ctl.abort(bullSignal.reason ?? CANCELLED);
    bullSignal.addEventListener('abort', fromBull, { once: true });
    this.running.set(rec.id, ctl);
    this.devicesOf.set(rec.id, gpus);
    let outcome: RunOutcome;
    try {
      outcome = await runner.run({
        jobId: rec.id,
        experiment: exp,
        paths: this.d.store.paths(rec.experiment, rec.id),
        gpus,
        user: this.d.user,
        signal: ctl.signal,
        onProgress: (p) => {
          rec = { ...rec, progress: p.percent, ...(p.message ? { message: p.message } : {}) };
          const patch = { progress: p.percent, ...(p.message ? { message: p.message } : {}) };
          this.d.ledger
            .change(rec, ['running'], patch, { order: 'redis-only' })
            .catch(() => undefined);
          job.setProgress(p.percent).catch(() => undefined);
        },
        onStarted: ({ pid }) => {
          this.d.ledger
            .change(rec, ['running'], { pid }, { order: 'redis-only' })
            .catch(() => undefined);
        },
      });
    } finally {
      this.running.delete(rec.id);
      this.devicesOf.delete(rec.id);
      bullSignal.removeEventListener('abort', fromBull);
      await runningWritten;
    }
    return this.finish(job, rec, outcome);
  }

  private async finish(job: QueuedJob, rec: JobRecord, o: RunOutcome): Promise<ProcessResult> {
    const exitCode = ('exitCode' in o ? o.exitCode : null) ?? null;
    if (o.kind === 'aborted' && o.reason === SHUTDOWN) {
      // Handed back untouched: another worker (or this one, restarted) runs it again.
      await this.requeue(rec, { progress: 0 });
      return { kind: 'later', delayMs: 0, counted: false };
    }
    if (o.kind === 'unavailable') {
      // The runner could not even start it (Docker went away meanwhile): back to the queue, the
      // try given back, like a job that found the runner unavailable before it started.
      this.warnOnce(`${rec.experiment} jobs wait: ${o.reason}`);
      await this.requeue(rec, { progress: 0 });
      return { kind: 'later', delayMs: UNAVAILABLE_RETRY_MS, counted: false };
    }
    const ms = { runMs: o.runMs };
    const lost = this.lostDevice.get(rec.id);
    this.lostDevice.delete(rec.id);
    if (o.kind === 'aborted' && lost && o.reason === lost) {
      // Its MIG instance vanished under it: a failed try (retried while tries remain, on
      // whatever device fits then), with the reason, never a cancel.
      if (job.tries < job.maxTries) {
        await this.requeue(rec, { exitCode, error: lost });
        return { kind: 'retry', error: lost };
      }
      return this.end(rec, 'failed', { exitCode, error: lost }, ms);
    }
    if (o.kind === 'aborted') return this.end(rec, 'cancelled', { exitCode, error: null }, ms);
    if (o.kind === 'timeout') return this.end(rec, 'failed', { exitCode, error: 'timeout' }, ms);
    if (o.kind === 'exited' && o.exitCode === 0) {
      return this.end(rec, 'succeeded', { exitCode: 0, progress: 100, error: null }, ms);
    }
    const error =
      o.kind === 'error'
        ? o.message
        : o.signal
          ? `killed by ${o.signal}`
          : `exited with code ${o.exitCode}`;
    // The log could not be written for lack of space, or the job failed with the disk full: it
    // fails as "disk full", without another try (it would meet the same full disk).
    if ((o.kind === 'error' && isNoSpace(o.message)) || (await this.d.store.isFull())) {
      this.d.log.error({ job: rec.id, experiment: rec.experiment, detail: error }, DISK_FULL);
      return this.end(rec, 'failed', { exitCode, error: DISK_FULL }, ms);
    }
    if (job.tries < job.maxTries) {
      await this.requeue(rec, { exitCode, error });
      return { kind: 'retry', error };
    }
    return this.end(rec, 'failed', { exitCode, error }, ms);
  }

  private async requeue(rec: JobRecord, patch: Partial<JobRecord>): Promise<void> {
    const back = await this.d.ledger.change(
      rec,
      ['running'],
      { ...patch, state: 'queued' },
      PATIENT,
    );
    // The disk mirror is best effort here (Redis is the truth until the end): a full disk
    // must not keep the job from going back to the queue.
    await back?.written.catch(() => undefined);
  }

  /** Ends the job: job.json (fsynced) first, then Redis, which tells every watcher. */
  private async end(
    rec: JobRecord,
    state: FinalState,
    patch: Partial<JobRecord>,
    timing: { runMs?: number } = {},
  ): Promise<ProcessResult> {
    const final: Ending = { ...patch, state, finishedAt: new Date().toISOString() };
    const t = await this.d.ledger.change(rec, ['queued', 'running'], final, {
      ...PATIENT,
      order: 'disk-first',
    });
    if (t?.changed) {
      this.d.log.info(
        {
          job: rec.id,
          experiment: rec.experiment,
          state: t.record.state,
          error: t.record.error,
          ...timing,
        },
        'job ended',
      );
    }
    // As recorded (a success whose job.json could not be written is a failure; ended by someone
    // else first, as they ended it).
    return bullEnding(t?.record ?? { state, error: final.error ?? null });
  }

  private async adopt(onDisk: JobRecord): Promise<ProcessResult> {
    // job.json already says it: Redis only.
    const { id, ...rest } = onDisk;
    await this.d.ledger.change(onDisk, ['queued', 'running'], rest, {
      ...PATIENT,
      order: 'redis-only',
    });
    this.d.log.warn(
      { job: id, state: onDisk.state },
      'job had ended on disk before its worker stopped',
    );
    return bullEnding(onDisk);
  }

  /**
   * MIG instances that vanished (an admin re-partitioned their GPU): every job running on one is
   * stopped and fails with the reason (a try used), instead of running on a device that is gone.
   */
  devicesLost(devices: readonly GpuDevice[]): void {
    for (const [id, ctl] of this.running) {
      const gone = devices.find((d) => this.devicesOf.get(id)?.includes(d.uuid));
      if (!gone) continue;
      const reason =
        `MIG instance ${gone.uuid} (${gone.profile ?? 'unknown profile'} on GPU ${gone.index}` +
        `${gone.parent ? ` ${gone.parent}` : ''}) vanished while the job ran: its GPU was re-partitioned`;
      this.lostDevice.set(id, reason);
      this.d.log.warn({ job: id, gpu: gone.uuid }, reason);
      ctl.abort(reason);
    }
  }

  /** Stops every running job so it is handed back to the queue (worker shutdown). */
  stopAll(): void {
    for (const ctl of this.running.values()) ctl.abort(SHUTDOWN);
  }

  dispose(): void {
    this.d.records.bus.off('cancel', this.onCancel);
  }
}

/**
 * How the record's `gpu` names one device: its UUID, and for a MIG instance its GPU's UUID in
 * parentheses (`MIG-… (GPU-…)`); the list is comma-separated.
 */
export function gpuLabel(id: string, device: GpuDevice | undefined): string {
  return device?.parent ? `${id} (${device.parent})` : id;
}
