/** A job's state as the API reports it (docs/ARCHITECTURE.md, "Job API"). */
export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export const JOB_STATES: readonly JobState[] = [
  'queued',
  'running',
  'succeeded',
  'failed',
  'cancelled',
];

export const isFinal = (s: JobState): boolean =>
  s === 'succeeded' || s === 'failed' || s === 'cancelled';

/** The record of one job: `GET /jobs/:id`'s answer, also written to job.json. */
export interface JobRecord {
  id: string;
  experiment: string;
  state: JobState;
  progress: number;
  message?: string;
  worker: string | null;
  /** Assigned GPU ids, comma-separated; null for a CPU-only job. */
  gpu: string | null;
  attempts: number;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  exitCode: number | null;
  error: string | null;
  /** The submission's priority (1 first); internal, never shown by the API (publicRecord). */
  priority?: number;
  /** The submission's idempotency key; internal, never shown by the API. */
  key?: string;
  /**
   * The process group of the running try (the process runner's onStarted), so that a restarted
   * worker can kill an orphan (JobsService.recoverOrphans); internal, never shown by the API.
   */
  pid?: number;
}

/** What the queue carries for one job: enough to run it without asking anything else. */
export interface JobPayload {
  id: string;
  experiment: string;
}
