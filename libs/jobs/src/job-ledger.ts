import type { Logger } from '../../config/src';
import type { JobRecord, JobState } from './job-record';
import type { JobRecordsRepository } from './queue/job-records.repository';
import { DISK_FULL, isNoSpace, type ResultsStore } from './store/results.store';

/**
 * In which order a change reaches Redis (the truth the API reports) and job.json (its mirror in
 * the job folder):
 * - `redis-first` (the default): the compare-and-set in Redis decides; job.json follows when it
 *   changed (renamed into place; fsynced for a final state). For changes another process may win:
 *   a cancel or a start.
 * - `disk-first`: the ending of a job by the process that ran it. The final job.json is written
 *   and fsynced first (for `succeeded` after the log and every output file), then Redis: what the
 *   API shows as ended is on disk, and a worker that dies in between leaves the disk to adopt.
 * - `redis-only`: job.json is left as it is: progress and pid (the next change mirrors them), or
 *   an ending adopted from job.json, which already says it.
 */
export type MirrorOrder = 'redis-first' | 'disk-first' | 'redis-only';

export interface ChangeOptions {
  /** Waits out a Redis restart instead of failing after 3 tries (the executor's changes). */
  patient?: boolean;
  order?: MirrorOrder;
}

export interface Change {
  /** False when the job was in none of the states given (someone else changed it first). */
  changed: boolean;
  /** The record in Redis after the change, or as it was when unchanged. */
  record: JobRecord;
  /**
   * Settles once job.json says what Redis says: at once with `disk-first` (it was written before
   * Redis) and `redis-only` (nothing to write), once the rename is done with `redis-first`. It
   * rejects with the write's error; unawaited, that rejection is ignored.
   */
  written: Promise<void>;
}

type FinalState = 'succeeded' | 'failed' | 'cancelled';

/** A final state with what goes with it: `disk-first` changes only end a job. */
export type Ending = Partial<JobRecord> & { state: FinalState };

const done = Promise.resolve();

/**
 * The one writer of a job's state (libs/jobs/README.md, "States and where they live"): every
 * change after submission goes through `change`, which makes it in Redis (compare-and-set, the
 * counts, the event) and mirrors it in job.json in the order the change needs. The executor and
 * the service call nothing else to change a job's state.
 */
export class JobLedger {
  constructor(
    private readonly records: Pick<JobRecordsRepository, 'transition'>,
    private readonly store: Pick<ResultsStore, 'writeRecord' | 'writeFinal'>,
    private readonly log: Logger,
  ) {}

  /**
   * Applies `patch` to job `job.id` when it is in one of `from` (any state when empty). Undefined
   * when there is no such job in Redis. With `disk-first`, `job` is the record as the caller holds
   * it, the base of the final job.json.
   */
  change(
    job: JobRecord,
    from: JobState[],
    patch: Ending,
    how: ChangeOptions & { order: 'disk-first' },
  ): Promise<Change | undefined>;
  change(
    job: Pick<JobRecord, 'id'>,
    from: JobState[],
    patch: Partial<JobRecord>,
    how?: ChangeOptions & { order?: 'redis-first' | 'redis-only' },
  ): Promise<Change | undefined>;
  async change(
    job: Pick<JobRecord, 'id'> | JobRecord,
    from: JobState[],
    patch: Partial<JobRecord>,
    how: ChangeOptions = {},
  ): Promise<Change | undefined> {
    const order = how.order ?? 'redis-first';
    const opts = { patient: how.patient ?? false };
    if (order === 'disk-first') return this.end(job as JobRecord, from, patch as Ending, opts);
    const t = await this.records.transition(job.id, from, patch, opts);
    if (!t) return undefined;
    if (order === 'redis-only' || !t.changed) return { ...t, written: done };
    const written = this.store.writeRecord(t.record);
    written.catch(() => undefined);
    return { ...t, written };
  }

  private async end(
    rec: JobRecord,
    from: JobState[],
    ending: Ending,
    opts: { patient: boolean },
  ): Promise<Change | undefined> {
    let final = ending;
    try {
      // For `succeeded` this also fsyncs the output before the record is renamed into place.
      const stopped = await this.store.writeFinal(
        { ...rec, ...final },
        final.state === 'succeeded',
      );
      if (stopped) {
        this.log.warn(
          { job: rec.id, stopped },
          "output/ not all fsynced (too many files): the rest is left to the kernel's writeback",
        );
      }
    } catch (err) {
      // The final job.json could not be written (the disk filled up, or worse). Nothing on disk
      // says the job ended; Redis must still hear an ending, and never `succeeded`, since its
      // output may not be on disk: a success becomes "disk full" (or the write's error).
      const why = isNoSpace(err) ? DISK_FULL : `cannot write job.json: ${(err as Error).message}`;
      this.log.error({ job: rec.id, err: (err as Error).message }, 'final job.json not written');
      if (final.state === 'succeeded')
        final = { ...final, state: 'failed', progress: rec.progress, error: why };
      // One more try of the (smaller, unfsynced-output) record; a failure leaves Redis the truth.
      await this.store.writeFinal({ ...rec, ...final }, false).catch(() => undefined);
    }
    const t = await this.records.transition(rec.id, from, final, opts);
    // Someone else ended it first (cannot normally happen): the disk follows Redis.
    if (t && !t.changed) await this.store.writeRecord(t.record);
    return t && { ...t, written: done };
  }
}
