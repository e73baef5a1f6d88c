import { EventEmitter } from 'node:events';
import { silentLogger } from '../../config/src';
import type { ExperimentCatalog } from './experiments/catalog';
import type { Experiment } from './experiments/experiment';
import type { GpuAllocator } from './gpu-allocator';
import { JobExecutor } from './job-executor';
import { JobLedger } from './job-ledger';
import type { JobRecord, JobState } from './job-record';
import type { QueuedJob } from './queue/bullmq.adapter';
import type { RunOutcome, Runner, RunSpec } from './runner/runner';
import { jobRecord, TEST_JOB_ID } from './testing/records';

const ID = TEST_JOB_ID;
const exp: Experiment = {
  name: 'hello',
  runner: 'process',
  command: ['true'],
  gpus: 0,
  attempts: 2,
  env: {},
} as Experiment;

const queuedRecord = (): JobRecord => jobRecord();

/**
 * The executor with the real ledger over fakes of Redis (one record, compare-and-set) and the
 * store, which log each call in one list: what reaches Redis and job.json, in order.
 */
function setup(
  opts: { outcome?: (spec: RunSpec) => Promise<RunOutcome>; record?: JobRecord } = {},
) {
  const calls: string[] = [];
  let current: JobRecord | undefined = opts.record ?? queuedRecord();
  const bus = new EventEmitter();
  const records = {
    bus,
    get: jest.fn(async () => current),
    transition: jest.fn(async (id: string, from: JobState[], patch: Partial<JobRecord>) => {
      calls.push(
        `redis ${Object.keys(patch).includes('state') ? patch.state : JSON.stringify(patch)}`,
      );
      if (!current || current.id !== id) return undefined;
      if (from.length && !from.includes(current.state)) return { changed: false, record: current };
      current = { ...current, ...patch };
      return { changed: true, record: current };
    }),
  };
  const store = {
    paths: jest.fn(() => ({
      dir: '/d',
      params: '/d/p',
      input: '/d/i',
      output: '/d/o',
      log: '/d/l',
    })),
    exitedOk: jest.fn(async () => false),
    readRecord: jest.fn(async (): Promise<JobRecord | undefined> => undefined),
    isFull: jest.fn(async () => false),
    writeRecord: jest.fn(async (r: JobRecord) => {
      calls.push(`json ${r.state}`);
    }),
    writeFinal: jest.fn(async (r: JobRecord, withOutput: boolean): Promise<string | undefined> => {
      calls.push(`final ${r.state}${withOutput ? ' +output' : ''}`);
      return undefined;
    }),
  };
  const runner: Runner = {
    run: jest.fn(async (spec: RunSpec) => {
      calls.push('run');
      return (opts.outcome ?? (async () => ({ kind: 'exited', exitCode: 0, runMs: 5 })))(spec);
    }),
  } as unknown as Runner;
  const gpus = { acquire: jest.fn(() => []), release: jest.fn(), device: jest.fn() };
  const log = silentLogger();
  const executor = new JobExecutor({
    catalog: { get: (name: string) => (name === 'hello' ? exp : undefined) } as ExperimentCatalog,
    ledger: new JobLedger(records, store, log),
    records,
    store,
    runners: new Map([['process', runner]]),
    gpus: gpus as unknown as GpuAllocator,
    workerName: 'w1',
    user: { uid: 1000 },
    log,
  });
  const job = (tries = 1, maxTries = 2): QueuedJob & { setProgress: jest.Mock } => ({
    id: ID,
    data: { id: ID, experiment: 'hello' },
    tries,
    maxTries,
    setProgress: jest.fn(async () => undefined),
  });
  return { calls, records, store, runner, gpus, executor, job, redis: () => current };
}

const signal = () => new AbortController().signal;

describe('JobExecutor', () => {
  it('a success: running in Redis then job.json, the run, the final job.json with output, then Redis', async () => {
    const s = setup();
    expect(await s.executor.process(s.job(), signal())).toEqual({ kind: 'done' });
    expect(s.calls).toEqual([
      'redis running',
      'json running',
      'run',
      'final succeeded +output',
      'redis succeeded',
    ]);
    expect(s.redis()).toMatchObject({
      state: 'succeeded',
      worker: 'w1',
      attempts: 1,
      exitCode: 0,
      progress: 100,
      error: null,
    });
    expect(s.redis()!.finishedAt).toEqual(expect.any(String));
    expect(s.gpus.release).toHaveBeenCalledTimes(1);
  });

  it('does not run a job cancelled while queued: BullMQ files it as cancelled, nothing is written', async () => {
    const s = setup({ record: { ...queuedRecord(), state: 'cancelled' } });
    expect(await s.executor.process(s.job(), signal())).toEqual({
      kind: 'fail',
      error: 'cancelled',
    });
    expect(s.runner.run).not.toHaveBeenCalled();
    expect(s.calls).toEqual(['redis running']);
  });

  it('progress and pid go to Redis only (job.json follows at the next change)', async () => {
    const s = setup({
      outcome: async (spec) => {
        spec.onStarted?.({ pid: 4321 });
        spec.onProgress({ percent: 30, message: 'step' });
        await new Promise((r) => setImmediate(r));
        expect(s.redis()).toMatchObject({ pid: 4321, progress: 30, message: 'step' });
        return { kind: 'exited', exitCode: 0 };
      },
    });
    const job = s.job();
    await s.executor.process(job, signal());
    expect(s.calls).toEqual([
      'redis running',
      'json running',
      'run',
      'redis {"pid":4321}',
      'redis {"progress":30,"message":"step"}',
      'final succeeded +output',
      'redis succeeded',
    ]);
    expect(job.setProgress).toHaveBeenCalledWith(30);
    // The final job.json has the progress the executor saw (100 for a success), not the pid.
    expect(s.store.writeFinal.mock.calls[0][0]).not.toHaveProperty('pid');
    expect(s.store.writeFinal.mock.calls[0][0]).toMatchObject({ message: 'step' });
  });

  it('a non-zero exit with a try left goes back to the queue (Redis, then job.json), then fails on the last', async () => {
    const s = setup({ outcome: async () => ({ kind: 'exited', exitCode: 3 }) });
    expect(await s.executor.process(s.job(1, 2), signal())).toEqual({
      kind: 'retry',
      error: 'exited with code 3',
    });
    expect(s.calls).toEqual([
      'redis running',
      'json running',
      'run',
      'redis queued',
      'json queued',
    ]);
    expect(s.redis()).toMatchObject({ state: 'queued', exitCode: 3, error: 'exited with code 3' });
    s.calls.length = 0;
    expect(await s.executor.process(s.job(2, 2), signal())).toEqual({
      kind: 'fail',
      error: 'exited with code 3',
    });
    expect(s.calls).toEqual([
      'redis running',
      'json running',
      'run',
      'final failed',
      'redis failed',
    ]);
  });

  it('waits for the running and queued job.json (renamed after Redis) before it answers', async () => {
    const s = setup({ outcome: async () => ({ kind: 'exited', exitCode: 3 }) });
    // Each rename takes a while: the running one ends after the run, the queued one after Redis.
    s.store.writeRecord.mockImplementation(async (r: JobRecord) => {
      s.calls.push(`json ${r.state}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
      s.calls.push(`json ${r.state} renamed`);
    });
    expect(await s.executor.process(s.job(1, 2), signal())).toMatchObject({ kind: 'retry' });
    expect(s.calls).toEqual([
      'redis running',
      'json running',
      'run',
      'json running renamed',
      'redis queued',
      'json queued',
      'json queued renamed',
    ]);
  });

  it('a hand-back at shutdown goes to the queue without using a try, even when job.json cannot be written', async () => {
    const s = setup({
      outcome: (spec) =>
        new Promise((resolve) =>
          spec.signal.addEventListener('abort', () =>
            resolve({ kind: 'aborted', reason: String(spec.signal.reason), exitCode: null }),
          ),
        ),
    });
    s.store.writeRecord.mockRejectedValue(Object.assign(new Error('full'), { code: 'ENOSPC' }));
    const result = s.executor.process(s.job(), signal());
    await new Promise((r) => setImmediate(r));
    s.executor.stopAll();
    expect(await result).toEqual({ kind: 'later', delayMs: 0, counted: false });
    expect(s.redis()).toMatchObject({ state: 'queued', progress: 0 });
    expect(s.store.writeFinal).not.toHaveBeenCalled();
  });

  it('a cancel from any process aborts the run and ends it cancelled', async () => {
    const s = setup({
      outcome: (spec) =>
        new Promise((resolve) =>
          spec.signal.addEventListener('abort', () =>
            resolve({ kind: 'aborted', reason: String(spec.signal.reason), exitCode: 143 }),
          ),
        ),
    });
    const result = s.executor.process(s.job(), signal());
    await new Promise((r) => setImmediate(r));
    s.records.bus.emit('cancel', ID);
    expect(await result).toEqual({ kind: 'fail', error: 'cancelled' });
    expect(s.calls.slice(-2)).toEqual(['final cancelled', 'redis cancelled']);
    expect(s.redis()).toMatchObject({ state: 'cancelled', exitCode: 143, error: null });
  });

  it('a success whose final job.json cannot be written is failed "disk full" in Redis', async () => {
    const s = setup();
    s.store.writeFinal.mockRejectedValue(Object.assign(new Error('full'), { code: 'ENOSPC' }));
    expect(await s.executor.process(s.job(), signal())).toEqual({
      kind: 'fail',
      error: 'disk full',
    });
    expect(s.redis()).toMatchObject({ state: 'failed', error: 'disk full' });
  });

  it('adopts a final job.json left by a worker that died before Redis heard: Redis only, not run', async () => {
    const s = setup({ record: { ...queuedRecord(), state: 'running', worker: 'w1' } });
    const onDisk: JobRecord = {
      ...queuedRecord(),
      state: 'succeeded',
      exitCode: 0,
      progress: 100,
      finishedAt: '2026-01-01T00:01:00.000Z',
    };
    s.store.readRecord.mockResolvedValue(onDisk);
    expect(await s.executor.process(s.job(2, 2), signal())).toEqual({ kind: 'done' });
    expect(s.runner.run).not.toHaveBeenCalled();
    expect(s.calls).toEqual(['redis succeeded']);
    expect(s.redis()).toMatchObject({ state: 'succeeded', finishedAt: onDisk.finishedAt });
  });

  it('records a try that had exited 0 (its mark) as succeeded without running it again', async () => {
    const s = setup({ record: { ...queuedRecord(), state: 'running' } });
    s.store.exitedOk.mockResolvedValue(true);
    expect(await s.executor.process(s.job(2, 2), signal())).toEqual({ kind: 'done' });
    expect(s.runner.run).not.toHaveBeenCalled();
    expect(s.calls).toEqual(['final succeeded +output', 'redis succeeded']);
  });

  it('fails a job picked up again with no try left: "worker restarted"', async () => {
    const s = setup({ record: { ...queuedRecord(), state: 'running' } });
    expect(await s.executor.process(s.job(3, 2), signal())).toEqual({
      kind: 'fail',
      error: 'worker restarted',
    });
    expect(s.calls).toEqual(['final failed', 'redis failed']);
  });
});
