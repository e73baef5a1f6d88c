import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { loadWorkerConfig, silentLogger, type Env } from '../../libs/config/src';
import {
  JobsModule,
  JobsRuntime,
  setupOpenApi,
  type JobRecord,
  type JobsOptions,
} from '../../libs/jobs/src';
import {
  JobRecordsRepository,
  type StateChange,
} from '../../libs/jobs/src/queue/job-records.repository';
import { optionsFromUrl } from '../../libs/jobs/src/queue/redis-connection';
import { JobsClient, writeTestExperiments } from '../../libs/jobs/src/testing/client';
import { startRedis, type TestRedis } from '../support/redis';
import { waitUntil } from '../support/system';
import { startJobs } from '../../libs/jobs/src/testing/start-jobs';

jest.setTimeout(60_000);

interface Worker {
  app: INestApplication;
  rt: JobsRuntime;
  api: JobsClient;
  data: string;
  /** Its EXPERIMENTS_DIR. */
  experiments: string;
  close(): Promise<void>;
}

/** The job module alone in a Nest app on a free port, against a real private Redis. */
async function startWorker(
  redis: TestRedis,
  env: Env = {},
  opts: Partial<JobsOptions> = {},
): Promise<Worker> {
  const data = mkdtempSync(path.join(tmpdir(), 'gsc-jobs-data-'));
  const exp = mkdtempSync(path.join(tmpdir(), 'gsc-jobs-exp-'));
  writeTestExperiments(exp, path.join(data, 'ran.log'), 1);
  const config = loadWorkerConfig({
    TUNNEL_KEY_FILE: '/unused',
    REDIS_URL: redis.url,
    DATA_FOLDER: data,
    EXPERIMENTS_DIR: exp,
    GPU_DEVICES: 'none',
    WORKER_NAME: 'int-test',
    ...env,
  });
  const app = await NestFactory.create(
    JobsModule.forRoot(config, silentLogger(), { killGraceMs: 500, ...opts }),
    {
      logger: false,
      abortOnError: false,
    },
  );
  setupOpenApi(app); // as the worker's main does
  await app.listen(0, '127.0.0.1');
  const api = new JobsClient((await app.getUrl()).replace('[::1]', '127.0.0.1'));
  return {
    app,
    rt: app.get(JobsRuntime),
    api,
    data,
    experiments: exp,
    close: () => app.close(),
  };
}

describe('jobs against a real Redis', () => {
  let redis: TestRedis;
  let w: Worker;

  beforeAll(async () => {
    redis = await startRedis();
    w = await startWorker(redis);
  });
  afterAll(async () => {
    await w?.close();
    redis?.stop();
  });

  it('runs a job to success and writes its record, output and log on disk', async () => {
    const id = await w.api.submit('hello', { name: 'Ada' });
    const rec = await w.api.waitFor(id, ['succeeded', 'failed']);
    expect(rec).toMatchObject({
      id,
      experiment: 'hello',
      state: 'succeeded',
      progress: 100,
      exitCode: 0,
      worker: 'int-test',
      gpu: null,
      attempts: 1,
    });
    const dir = path.join(w.data, 'jobs', 'hello', id);
    expect(JSON.parse(readFileSync(path.join(dir, 'job.json'), 'utf8'))).toMatchObject({
      state: 'succeeded',
    });
    expect(JSON.parse(readFileSync(path.join(dir, 'params.json'), 'utf8'))).toEqual({
      name: 'Ada',
    });
    expect(readFileSync(path.join(dir, 'output', 'hello.txt'), 'utf8')).toContain('Ada');
    expect(readFileSync(path.join(dir, 'logs', 'output.log'), 'utf8')).toContain(
      '::progress:: 99 step 3',
    );
  });

  it('returns the first job when the same idempotency key is submitted twice', async () => {
    const first = await w.api.call('POST', '/jobs', {
      experiment: 'quick',
      params: {},
      key: 'order-17',
    });
    const again = await w.api.call('POST', '/jobs', {
      experiment: 'quick',
      params: {},
      key: 'order-17',
    });
    expect(first.status).toBe(201);
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(first.body.id);
  });

  it('refuses invalid params naming the field, and an unknown experiment', async () => {
    const bad = await w.api.call('POST', '/jobs', { experiment: 'hello', params: { name: 3 } });
    expect(bad).toEqual({
      status: 400,
      body: { statusCode: 400, error: 'Bad Request', message: 'params.name must be string' },
    });
    const unknown = await w.api.call('POST', '/jobs', { experiment: 'nope', params: {} });
    expect(unknown.status).toBe(404);
    expect(unknown.body.message).toMatch(/experiment 'nope' is not installed/);
  });

  it('answers 400 for a malformed job id and 404 for an unknown one', async () => {
    expect((await w.api.call('GET', '/jobs/..%2F..%2Fetc')).status).toBe(400);
    expect((await w.api.call('GET', '/jobs/0b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f')).status).toBe(
      404,
    );
  });

  it('streams state and progress events, and answers 404 for events of an unknown job', async () => {
    const id = await w.api.submit('hello', { name: 'Sse' });
    const events = await w.api.events(id);
    expect(events[events.length - 1]).toMatchObject({
      event: 'state',
      data: { id, state: 'succeeded' },
    });
    expect(events.some((e) => e.event === 'progress')).toBe(true);
    const missing = await w.api.call('GET', '/jobs/0b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f/events');
    expect(missing.status).toBe(404);
  });

  it('answers 503, not 500, while Redis is down, and recovers when it is back', async () => {
    const id = await w.api.submit('quick');
    await w.api.waitFor(id, ['succeeded']);
    redis.kill();
    try {
      const r = await w.api.call('GET', `/jobs/${id}`);
      expect(r.status).toBe(503);
      expect(r.body.message).toMatch(/Redis/);
    } finally {
      await redis.start();
    }
    await w.api.waitFor(id, ['succeeded']);
  });

  it('puts multipart input files into input/ for the job', async () => {
    const form = new FormData();
    form.set('experiment', 'copy-input');
    form.set('params', '{}');
    form.append('data', new Blob(['a,b\n1,2\n']), 'table.csv');
    form.append('data', new Blob(['x']), '../../evil.txt');
    const res = await fetch(`${w.api.base}/jobs`, { method: 'POST', body: form });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    expect((await w.api.waitFor(id, ['succeeded', 'failed'])).state).toBe('succeeded');
    const files = (await w.api.call('GET', `/jobs/${id}/files`)).body.files;
    expect(files).toEqual([
      { path: 'evil.txt', size: 1 },
      { path: 'table.csv', size: 8 },
    ]);
    expect(existsSync(path.join(w.data, 'jobs', 'evil.txt'))).toBe(false);
  });

  it('retries a failing job while attempts remain, then fails with its exit code', async () => {
    const id = await w.api.submit('flaky');
    const rec = await w.api.waitFor(id, ['failed', 'succeeded']);
    expect(rec).toMatchObject({
      state: 'failed',
      attempts: 2,
      exitCode: 7,
      error: 'exited with code 7',
    });
    expect(readFileSync(path.join(w.data, 'jobs', 'flaky', id, 'logs', 'output.log'), 'utf8')).toBe(
      'try\ntry\n',
    );
  });

  it('fails a job past its timeout with "timeout"', async () => {
    const id = await w.api.submit('slow-timeout');
    expect(await w.api.waitFor(id, ['failed', 'succeeded'])).toMatchObject({
      state: 'failed',
      error: 'timeout',
    });
  });

  it('cancels a queued job so it never starts, and stops a running one', async () => {
    const running = await w.api.submit('once');
    await w.api.waitFor(running, ['running']);
    const queued = await w.api.submit('quick');
    const c1 = await w.api.call('DELETE', `/jobs/${queued}`);
    expect(c1.body).toMatchObject({ state: 'cancelled', startedAt: null });
    const c2 = await w.api.call('DELETE', `/jobs/${running}`);
    expect(c2.status).toBe(200);
    expect(await w.api.waitFor(running, ['cancelled', 'failed', 'succeeded'])).toMatchObject({
      state: 'cancelled',
    });
    const later = await w.api.submit('quick');
    await w.api.waitFor(later, ['succeeded']);
    expect((await w.api.job(queued)).startedAt).toBeNull();
    // BullMQ's own entries (what bull-board shows): named after the experiment; the cancelled
    // one under failed with reason `cancelled`, never under completed.
    const [cpu] = w.rt.queue.bullQueues();
    await waitUntil('the cancelled job to leave active', async () => {
      const state = await cpu.getJobState(running);
      return state === 'failed' || state === 'completed';
    });
    const fresh = await cpu.getJob(running);
    expect({ name: fresh?.name, reason: fresh?.failedReason }).toEqual({
      name: 'once',
      reason: 'cancelled',
    });
    expect((await cpu.getJob(later))?.name).toBe('quick');
    expect(await (await cpu.getJob(later))?.getState()).toBe('completed');
    // The cancelled-while-queued one left the queue.
    expect(await cpu.getJob(queued)).toBeUndefined();
  });

  it('lists jobs newest first, filtered by experiment and state', async () => {
    const a = await w.api.submit('quick');
    await w.api.waitFor(a, ['succeeded']);
    const b = await w.api.submit('quick');
    await w.api.waitFor(b, ['succeeded']);
    const list = (await w.api.call('GET', '/jobs?experiment=quick&state=succeeded&limit=2')).body;
    expect(list.map((j: { id: string }) => j.id)).toEqual([b, a]);
    expect((await w.api.call('GET', '/jobs?state=weird')).status).toBe(400);
  });

  /** The kept counts (zeros left out) and a count of every record, for comparison. */
  async function countsAndRecount(): Promise<[Record<string, number>, Record<string, number>]> {
    const kept: Record<string, number> = {};
    for (const [exp, byState] of await w.rt.records.counts())
      for (const [state, n] of byState) if (n !== 0) kept[`${exp}/${state}`] = n;
    const recount: Record<string, number> = {};
    for (const r of await w.rt.records.list({ limit: Number.MAX_SAFE_INTEGER }))
      recount[`${r.experiment}/${r.state}`] = (recount[`${r.experiment}/${r.state}`] ?? 0) + 1;
    return [kept, recount];
  }

  it('keeps jobs per experiment and state in Redis, equal to a count of the records', async () => {
    // By now this suite made jobs end in every way: succeeded, failed, cancelled, timeout.
    const [kept, recount] = await countsAndRecount();
    expect(Object.keys(recount).length).toBeGreaterThanOrEqual(4);
    expect(kept).toEqual(recount);
    // Data from before the counts (no `gsc:counts:ready`): built once from the records.
    await w.rt.records.client.del('gsc:counts', 'gsc:counts:ready');
    const total = Object.values(recount).reduce((a, b) => a + b, 0);
    expect(await w.rt.records.buildCounts()).toBe(total);
    expect(await w.rt.records.buildCounts()).toBe(-1); // and only once
    expect((await countsAndRecount())[0]).toEqual(recount);
  });

  it('removes finished jobs past RESULTS_TTL: folder, record and queue entry together', async () => {
    const id = await w.api.submit('quick');
    await w.api.waitFor(id, ['succeeded']);
    const dir = path.join(w.data, 'jobs', 'quick', id);
    expect(existsSync(dir)).toBe(true);
    const removed = await w.rt.service.sweep(Date.now() + 31 * 24 * 3600 * 1000);
    expect(removed).toBeGreaterThan(0);
    expect(existsSync(dir)).toBe(false);
    expect((await w.api.call('GET', `/jobs/${id}`)).status).toBe(404);
    expect((await w.rt.queue.counts('cpu')).completed).toBe(0);
    // Removed records left the counts too.
    const [kept, recount] = await countsAndRecount();
    expect(kept).toEqual(recount);
  });

  it('serves the OpenAPI document with every job route', async () => {
    const doc = (await w.api.call('GET', '/docs-json')).body;
    for (const p of [
      '/experiments',
      '/jobs',
      '/jobs/{id}',
      '/jobs/{id}/logs',
      '/jobs/{id}/events',
      '/jobs/{id}/files',
    ]) {
      expect(Object.keys(doc.paths)).toContain(p);
    }
  });
});

describe('experiments changed while jobs are queued', () => {
  let redis: TestRedis;
  let w: Worker;

  beforeAll(async () => {
    redis = await startRedis();
    w = await startWorker(redis, { WORKER_CONCURRENCY: '1' });
  });
  afterAll(async () => {
    await w?.close();
    redis?.stop();
  });

  it('cancels a queued job whose experiment asks for GPUs since: its entry leaves the queue it is in', async () => {
    const held = await w.api.submit('once');
    await w.api.waitFor(held, ['running']);
    const queued = await w.api.submit('quick');
    // Queued in the CPU queue; now the experiment wants a GPU (the GPU queue, for new jobs).
    writeFileSync(
      path.join(w.experiments, 'quick.yaml'),
      'name: quick\nrunner: process\ncommand: ["true"]\ngpus: 1\nparams: { type: object }\n',
    );
    // (The file watch may read it first; either way it is read by the time this resolves.)
    await w.rt.reloadExperiments('test');
    expect(w.rt.catalog.get('quick')?.gpus).toBe(1);
    const cancelled = await w.api.call('DELETE', `/jobs/${queued}`);
    expect(cancelled.body).toMatchObject({ state: 'cancelled' });
    const [cpu] = w.rt.queue.bullQueues();
    // Left in the CPU queue, it would be picked up and wait there for a GPU this worker lacks.
    expect(await cpu.getJob(queued)).toBeUndefined();
    await w.api.call('DELETE', `/jobs/${held}`);
  });
});

describe('GPU slots', () => {
  let redis: TestRedis;
  let w: Worker;

  beforeAll(async () => {
    redis = await startRedis();
    w = await startWorker(redis, { GPU_DEVICES: '0,1' });
  });
  afterAll(async () => {
    await w?.close();
    redis?.stop();
  });

  it('runs GPU jobs one per GPU, names it in CUDA_VISIBLE_DEVICES, and frees it on every ending', async () => {
    const ids = [
      await w.api.submit('gpu-probe', { fail: true }),
      await w.api.submit('gpu-probe'),
      await w.api.submit('gpu-probe'),
      await w.api.submit('gpu-probe'),
    ];
    const recs = [];
    for (const id of ids) recs.push(await w.api.waitFor(id, ['succeeded', 'failed']));
    expect(recs.map((r) => r.state)).toEqual(['failed', 'succeeded', 'succeeded', 'succeeded']);
    for (const r of recs) {
      expect(['0', '1']).toContain(r.gpu);
      const seen = readFileSync(
        path.join(w.data, 'jobs', 'gpu-probe', r.id, 'output', 'gpu.txt'),
        'utf8',
      );
      expect(seen.trim()).toBe(r.gpu);
    }
    // Never two jobs on one GPU at once.
    const spans = recs.map((r) => ({
      gpu: r.gpu,
      from: Date.parse(r.startedAt),
      to: Date.parse(r.finishedAt),
    }));
    for (const a of spans)
      for (const b of spans)
        if (a !== b && a.gpu === b.gpu) expect(a.to <= b.from || b.to <= a.from).toBe(true);
    expect(w.rt.gpus.inUse()).toEqual({ '0': 0, '1': 0 });
  });

  it('keeps CPU-only jobs off the GPUs', async () => {
    const id = await w.api.submit('quick');
    expect(await w.api.waitFor(id, ['succeeded'])).toMatchObject({ gpu: null });
  });
});

describe('job admission limits', () => {
  let redis: TestRedis;

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  it('answers 507 with the reason when free disk is below MIN_FREE_DISK', async () => {
    const w = await startWorker(redis, { MIN_FREE_DISK: '99.99%' });
    try {
      const r = await w.api.call('POST', '/jobs', { experiment: 'quick', params: {} });
      expect(r.status).toBe(507);
      expect(r.body.message).toMatch(/below MIN_FREE_DISK 99.99%/);
    } finally {
      await w.close();
    }
  });

  it('answers 413 for an input file over the upload limit', async () => {
    const w = await startWorker(redis, { MAX_UPLOAD: '1024' });
    try {
      const form = new FormData();
      form.set('experiment', 'copy-input');
      form.append('data', new Blob([Buffer.alloc(4096)]), 'big.bin');
      const res = await fetch(`${w.api.base}/jobs`, { method: 'POST', body: form });
      expect(res.status).toBe(413);
    } finally {
      await w.close();
    }
  });

  it('refuses a Redis whose maxmemory-policy is not noeviction, saying so', async () => {
    const { execFileSync } = await import('node:child_process');
    execFileSync('redis-cli', [
      '-p',
      String(redis.port),
      'config',
      'set',
      'maxmemory-policy',
      'allkeys-lru',
    ]);
    try {
      await expect(startWorker(redis)).rejects.toThrow(
        /maxmemory-policy 'allkeys-lru'.*noeviction/,
      );
    } finally {
      execFileSync('redis-cli', [
        '-p',
        String(redis.port),
        'config',
        'set',
        'maxmemory-policy',
        'noeviction',
      ]);
    }
  });

  it('stops at start on a bad experiment file, naming file and field', async () => {
    const exp = mkdtempSync(path.join(tmpdir(), 'gsc-jobs-bad-'));
    writeFileSync(
      path.join(exp, 'bad.yaml'),
      'name: bad\nrunner: process\ncommand: "not a list"\nparams: {}\n',
    );
    const config = loadWorkerConfig({
      TUNNEL_KEY_FILE: '/unused',
      REDIS_URL: redis.url,
      EXPERIMENTS_DIR: exp,
      GPU_DEVICES: 'none',
    });
    await expect(startJobs(config, silentLogger())).rejects.toThrow(
      /bad\.yaml: command must be a list of strings, like \[python, train\.py\]/,
    );
  });
});

/**
 * The repository's Lua scripts (libs/jobs/src/queue/lua/), on their own against a real Redis:
 * compare-and-set, the counts kept in the same step, events to every process, removals.
 */
describe('job records (Lua) against a real Redis', () => {
  let redis: TestRedis;
  let a: JobRecordsRepository;
  /** A second worker process on the same Redis. */
  let b: JobRecordsRepository;

  beforeAll(async () => {
    redis = await startRedis();
    const backend = {
      options: optionsFromUrl(redis.url),
      describe: redis.url,
      stop: async () => {},
    };
    a = new JobRecordsRepository(backend, silentLogger());
    b = new JobRecordsRepository(backend, silentLogger());
    await Promise.all([a.init(), b.init()]);
  });
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    redis?.stop();
  });

  let n = 0;
  /** A queued record of an experiment of its own, so each test's counts start at zero. */
  const queued = (extra: Partial<JobRecord> = {}): JobRecord => ({
    id: randomUUID(),
    experiment: `lua-${++n}`,
    state: 'queued',
    progress: 0,
    worker: null,
    gpu: null,
    attempts: 0,
    createdAt: new Date(Date.now() - 1000).toISOString(),
    startedAt: null,
    finishedAt: null,
    exitCode: null,
    error: null,
    ...extra,
  });
  const countsOf = async (experiment: string) =>
    Object.fromEntries((await a.counts()).get(experiment) ?? new Map<string, number>());

  it('transition: changes only from the states given, moves the counts, publishes to every process', async () => {
    const rec = queued();
    await a.create(rec);
    expect(await countsOf(rec.experiment)).toEqual({ queued: 1 });
    const changes: StateChange[] = [];
    a.bus.on('state', (c: StateChange) => changes.push(c));
    const seenByB: JobRecord[] = [];
    b.bus.on(`event:${rec.id}`, (r: JobRecord) => seenByB.push(r));

    // Not in `from`: nothing changes, the record is returned as it is.
    const refused = await a.transition(rec.id, ['running'], { state: 'failed', error: 'x' });
    expect(refused).toEqual({
      changed: false,
      record: expect.objectContaining({ state: 'queued', error: null }),
    });
    expect(await countsOf(rec.experiment)).toEqual({ queued: 1 });

    const started = await a.transition(rec.id, ['queued'], {
      state: 'running',
      worker: 'w1',
      pid: 42,
    });
    expect(started?.changed).toBe(true);
    expect(started?.record).toMatchObject({ state: 'running', worker: 'w1', pid: 42 });
    // cjson does not keep key order: the documented fields come first, in their order.
    expect(Object.keys(started!.record).slice(0, 3)).toEqual(['id', 'experiment', 'state']);
    expect(await a.get(rec.id)).toEqual(started!.record);
    expect(await countsOf(rec.experiment)).toEqual({ queued: 0, running: 1 });
    await waitUntil('the other process hears of the start', () =>
      seenByB.some((r) => r.state === 'running'),
    );
    expect(changes).toEqual([{ record: started!.record, previous: 'queued' }]);

    // An empty `from` is any state; the same state leaves the counts alone.
    const progress = await a.transition(rec.id, [], { progress: 50 });
    expect(progress).toMatchObject({ changed: true, record: { state: 'running', progress: 50 } });
    expect(await countsOf(rec.experiment)).toEqual({ queued: 0, running: 1 });
    expect(changes).toHaveLength(1); // no change of state, no 'state' event
    expect(await a.transition(randomUUID(), [], { progress: 1 })).toBeUndefined();
  });

  it('delete: the record leaves the counts under the state it has now, with its index entry and key', async () => {
    const rec = queued({ key: `k-${randomUUID()}` });
    expect(await a.claimKey(rec.key!, rec.id, 60_000)).toBeUndefined();
    await a.create(rec);
    await b.transition(rec.id, ['queued'], { state: 'running' });
    await a.delete(rec); // the caller's copy still says queued
    expect(await countsOf(rec.experiment)).toEqual({ queued: 0, running: 0 });
    expect(await a.get(rec.id)).toBeUndefined();
    expect(await a.createdBefore(Date.now())).not.toContain(rec.id);
    expect(await a.claimKey(rec.key!, randomUUID(), 60_000)).toBeUndefined(); // the key is free
  });

  it('buildCounts: counts every record once, then leaves them to the changes', async () => {
    const recs = [queued(), queued(), queued()].map((r) => ({ ...r, experiment: 'lua-build' }));
    for (const r of recs) await a.create(r);
    await a.transition(recs[0].id, [], { state: 'succeeded' });
    await a.client.del('gsc:counts', 'gsc:counts:ready');
    const all = await a.list({ limit: Number.MAX_SAFE_INTEGER });
    expect(await a.buildCounts()).toBe(all.length);
    expect(await countsOf('lua-build')).toEqual({ queued: 2, succeeded: 1 });
    expect(await a.buildCounts()).toBe(-1);
    await a.transition(recs[1].id, [], { state: 'cancelled' });
    expect(await countsOf('lua-build')).toEqual({ queued: 1, succeeded: 1, cancelled: 1 });
  });
});
