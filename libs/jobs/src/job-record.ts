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
  priority?: number;
  key?: string;
}

/** What the queue carries for one job: enough to run it without asking anything else. */
export interface JobPayload {
  id: string;
  experiment: string;
}
