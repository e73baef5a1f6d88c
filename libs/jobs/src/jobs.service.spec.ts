import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { silentLogger } from '../../config/src';
import type { ExperimentCatalog } from './experiments/catalog';
import { JobLedger } from './job-ledger';
import type { JobRecord, JobState } from './job-record';
import { JobsService, MAX_PARAMS_DEPTH, nestingDepth, type JobsServiceDeps } from './jobs.service';
import type { JobQueue } from './queue/bullmq.adapter';
import { jobRecord, TEST_JOB_ID } from './testing/records';

/** `levels` arrays, one inside the other, as JSON.parse would give them. */
const nested = (levels: number): unknown =>
  JSON.parse(`${'['.repeat(levels)}${']'.repeat(levels)}`);

describe('nestingDepth', () => {
  it.each([
    [1, 0],
    ['text', 0],
    [null, 0],
    [{}, 1],
    [[], 1],
    [{ a: 1, b: [1, 2] }, 2],
    [{ a: { b: { c: [{ d: 1 }] } } }, 5],
  ])('%j is %d deep', (value, depth) => expect(nestingDepth(value, MAX_PARAMS_DEPTH)).toBe(depth));

  it('counts the deepest branch, not the first one', () => {
    expect(nestingDepth({ shallow: 1, deep: nested(10) }, MAX_PARAMS_DEPTH)).toBe(11);
  });

  it('stops one level past the limit, without recursion, on 45,000 levels', () => {
    expect(nestingDepth(nested(45_000), MAX_PARAMS_DEPTH)).toBe(MAX_PARAMS_DEPTH + 1);
    expect(nestingDepth(nested(MAX_PARAMS_DEPTH), MAX_PARAMS_DEPTH)).toBe(MAX_PARAMS_DEPTH);
  });
});

const ID = TEST_JOB_ID;
const record = jobRecord;

/**
 * The service with the real ledger over fakes of Redis (records by id, compare-and-set), the
 * store and the queue, which log each call in one list: what is written where, in order.
 */
function setup(initial: JobRecord[] = []) {
  const calls: string[] = [];
  const redis = new Map(initial.map((r) => [r.id, r]));
  const bus = new EventEmitter();
  const records = {
    bus,
    get: jest.fn(async (id: string) => redis.get(id)),
    create: jest.fn(async (r: JobRecord) => {
      calls.push(`redis create ${r.state}`);
      redis.set(r.id, r);
    }),
    transition: jest.fn(async (id: string, from: JobState[], patch: Partial<JobRecord>) => {
      calls.push(`redis ${String(patch.state)}`);
      const cur = redis.get(id);
      if (!cur) return undefined;
      if (from.length && !from.includes(cur.state)) return { changed: false, record: cur };
      const next = { ...cur, ...patch };
      redis.set(id, next);
      return { changed: true, record: next };
    }),
    releaseKey: jest.fn(async (key: string) => {
      calls.push(`release ${key}`);
    }),
    claimKey: jest.fn(async () => undefined),
    publishCancel: jest.fn(async (id: string) => {
      calls.push(`publish cancel ${id}`);
    }),
    listByState: jest.fn(async (state: JobState) =>
      [...redis.values()].filter((r) => r.state === state),
    ),
    delete: jest.fn(),
    createdBefore: jest.fn(async (_before: number) => [...redis.keys()]),
  };
  const store = {
    root: '/data/jobs',
    diskShortage: jest.fn(async () => undefined),
    create: jest.fn(async (r: JobRecord) => {
      calls.push(`folder ${r.state}`);
      return { dir: '/d', params: '/d/p', input: '/d/i', output: '/d/o', log: '/d/l' };
    }),
    remove: jest.fn(async (_experiment: string, _id: string) => {
      calls.push('folder removed');
    }),
    writeRecord: jest.fn(async (r: JobRecord) => {
      calls.push(`json ${r.state}`);
    }),
    writeFinal: jest.fn(),
  };
  const queue = {
    add: jest.fn(async () => {
      calls.push('queue add');
    }),
    remove: jest.fn(async (kind: string) => {
      calls.push(`queue remove ${kind}`);
      return true;
    }),
    dropLock: jest.fn(async (kind: string, id: string) => {
      calls.push(`unlock ${kind} ${id}`);
    }),
  };
  const exp = {
    name: 'hello',
    runner: 'process',
    command: ['true'],
    gpus: 0,
    attempts: 1,
    env: {},
  };
  const log = silentLogger();
  const service = new JobsService({
    catalog: {
      get: (name: string) => (name === 'hello' ? exp : undefined),
      list: () => [exp],
      validateParams: () => undefined,
    } as unknown as ExperimentCatalog,
    ledger: new JobLedger(records, store, log),
    records: records as unknown as JobsServiceDeps['records'],
    queue: queue as unknown as JobQueue,
    store: store as unknown as JobsServiceDeps['store'],
    gpuRefusal: () => undefined,
    minFreeDisk: { bytes: 0 },
    resultsTtlMs: 60_000,
    log,
  });
  return { calls, redis, records, store, queue, service, log };
}

describe('JobsService.cancel', () => {
  it('a queued job: cancelled in Redis, then job.json, then out of both queues', async () => {
    const s = setup([record()]);
    const rec = await s.service.cancel(ID);
    expect(rec).toMatchObject({ state: 'cancelled', finishedAt: expect.any(String) });
    expect(s.calls).toEqual([
      'redis cancelled',
      'json cancelled',
      'queue remove cpu',
      'queue remove gpu',
    ]);
    expect(s.store.writeRecord).toHaveBeenCalledWith(s.redis.get(ID));
    expect(s.records.publishCancel).not.toHaveBeenCalled();
  });

  it('a queued job whose job.json cannot be written: the error, and the entry left in the queue', async () => {
    const s = setup([record()]);
    s.store.writeRecord.mockRejectedValue(new Error('EIO'));
    await expect(s.service.cancel(ID)).rejects.toThrow('EIO');
    expect(s.queue.remove).not.toHaveBeenCalled();
  });

  it('a running job: asked of the worker that runs it, which ends it; the service writes no record', async () => {
    const s = setup([record({ state: 'running' })]);
    const answer = s.service.cancel(ID);
    await new Promise((r) => setImmediate(r));
    expect(s.calls).toEqual(['redis cancelled', `publish cancel ${ID}`]);
    const ended = record({ state: 'cancelled' });
    s.redis.set(ID, ended);
    s.records.bus.emit(`event:${ID}`, ended);
    expect(await answer).toEqual(ended);
    expect(s.store.writeRecord).not.toHaveBeenCalled();
  });

  it('an ended job is answered as it is, unchanged', async () => {
    const s = setup([record({ state: 'succeeded' })]);
    expect(await s.service.cancel(ID)).toMatchObject({ state: 'succeeded' });
    expect(s.calls).toEqual([]);
  });
});

describe('JobsService.submit that fails half-way', () => {
  it('marks the record failed in Redis then job.json, and frees its key, when the queue refuses it', async () => {
    const s = setup();
    s.queue.add.mockRejectedValue(new Error('Connection is closed'));
    await expect(s.service.submit({ experiment: 'hello', key: 'k1' })).rejects.toThrow(
      'Connection is closed',
    );
    await waitFor(() => s.calls.includes('json failed') && s.calls.includes('release k1'));
    const [rec] = [...s.redis.values()];
    expect(rec).toMatchObject({
      state: 'failed',
      error: 'not queued: submission failed',
      key: 'k1',
    });
    // Redis first (it decides), then job.json and the key, side by side.
    expect(s.calls.slice(0, 3)).toEqual(['folder queued', 'redis create queued', 'redis failed']);
    expect(s.calls.slice(3).sort()).toEqual(['json failed', 'release k1']);
  });

  it('says so when the failed record cannot be written to job.json', async () => {
    const s = setup();
    const warned = jest.spyOn(s.log, 'warn');
    s.queue.add.mockRejectedValue(new Error('Connection is closed'));
    s.store.writeRecord.mockRejectedValue(new Error('EIO'));
    await expect(s.service.submit({ experiment: 'hello' })).rejects.toThrow('Connection is closed');
    await waitFor(() => warned.mock.calls.length > 0);
    expect(warned).toHaveBeenCalledWith(
      expect.objectContaining({ err: 'EIO' }),
      'failed submission not marked',
    );
  });

  it('removes the folder when Redis never had the record', async () => {
    const s = setup();
    s.records.create.mockRejectedValue(new Error('Connection is closed'));
    await expect(s.service.submit({ experiment: 'hello' })).rejects.toThrow('Connection is closed');
    await waitFor(() => s.calls.includes('folder removed'));
    expect(s.calls).toEqual(['folder queued', 'redis failed', 'folder removed']);
    expect(s.store.writeRecord).not.toHaveBeenCalled();
  });
});

describe('JobsService.recoverOrphans', () => {
  const children: ChildProcess[] = [];
  afterAll(() => children.forEach((c) => c.kill('SIGKILL')));
  /** A process in a group of its own, like a job's, with JOB_ID in its environment or not. */
  const spawnGroup = (env: Record<string, string>) => {
    const c = spawn('sleep', ['30'], { detached: true, env: { ...process.env, ...env } });
    children.push(c);
    return c;
  };
  const exited = (c: ChildProcess) =>
    new Promise<NodeJS.Signals | null>((resolve) => c.once('exit', (_code, sig) => resolve(sig)));

  it("kills the process group its record's pid names, only while that process is the job's", async () => {
    const other = randomUUID();
    const job = spawnGroup({ JOB_ID: ID });
    const reused = spawnGroup({ JOB_ID: 'someone-else' });
    const s = setup([
      record({ state: 'running', worker: 'w1', pid: job.pid }),
      record({ id: other, state: 'running', worker: 'w1', pid: reused.pid }),
      record({ id: randomUUID(), state: 'running', worker: 'w2' }),
    ]);
    const killed = exited(job);
    expect(await s.service.recoverOrphans('w1')).toBe(2);
    expect(await killed).toBe('SIGKILL');
    expect(reused.exitCode).toBeNull();
    expect(reused.signalCode).toBeNull();
    // Both queues' locks dropped (the experiment's `gpus` may have changed), this worker's only.
    expect(s.calls).toEqual([
      `unlock cpu ${ID}`,
      `unlock gpu ${ID}`,
      `unlock cpu ${other}`,
      `unlock gpu ${other}`,
    ]);
  });
});

async function waitFor(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(check()).toBe(true);
}

describe('JobsService.sweep', () => {
  const ids = ['a', 'b', 'c'].map((c) => `${c.repeat(8)}-0000-4000-8000-000000000000`);

  function sweeping() {
    const s = setup(ids.map((id) => record({ id, state: 'succeeded' })));
    const warn = jest.spyOn(s.log, 'warn');
    // The second job's folder cannot be removed (a job's chmod 500 under a non-root worker).
    s.store.remove.mockImplementation(async (_exp: string, id: string) => {
      if (id === ids[1])
        throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
      s.calls.push(`folder removed ${id[0]}`);
    });
    return { ...s, warn };
  }

  it('goes on past a job it cannot remove, keeps that one for the next sweep, logs it once', async () => {
    const s = sweeping();
    expect(await s.service.sweep()).toBe(2);
    expect(s.calls.filter((c) => c.startsWith('folder removed'))).toEqual([
      'folder removed a',
      'folder removed c',
    ]);
    expect(s.records.delete.mock.calls.map(([r]) => (r as JobRecord).id)).toEqual([ids[0], ids[2]]);
    expect(s.service.sweepFailed).toBe(1);
    const lines = () =>
      s.warn.mock.calls.filter(([o]) => (o as { job?: string }).job === ids[1]).length;
    expect(lines()).toBe(1);
    // Tried again at each sweep; logged at the 2nd, 4th, 8th... failure only.
    for (let i = 0; i < 3; i++) await s.service.sweep();
    expect(s.service.sweepFailed).toBe(4);
    expect(lines()).toBe(3);
  });

  it('runs one sweep at a time: a call meanwhile waits for the running one', async () => {
    const s = sweeping();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    s.store.remove.mockImplementationOnce(async () => gate);
    const first = s.service.sweep();
    const second = s.service.sweep();
    const third = s.service.sweep();
    await new Promise((r) => setTimeout(r, 10));
    expect(s.store.remove).toHaveBeenCalledTimes(1);
    release();
    expect(await first).toBe(2);
    await second;
    expect(await third).toBe(await second);
    expect(s.records.createdBefore).toHaveBeenCalledTimes(2);
  });
});
