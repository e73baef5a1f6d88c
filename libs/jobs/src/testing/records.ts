import type { JobRecord } from '../job-record';

/** The id of the job the unit specs' fakes hold. */
export const TEST_JOB_ID = '0b8e6c1e-7f7e-4c55-9d64-2f1f1a0c0a01';

/** A queued job record of experiment `hello`, with `over` on top (unit specs). */
export const jobRecord = (over: Partial<JobRecord> = {}): JobRecord => ({
  id: TEST_JOB_ID,
  experiment: 'hello',
  state: 'queued',
  progress: 0,
  worker: null,
  gpu: null,
  attempts: 0,
  createdAt: '2026-01-01T00:00:00.000Z',
  startedAt: null,
  finishedAt: null,
  exitCode: null,
  error: null,
  ...over,
});
