import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JobsClient, rawGet, writeTestExperiments } from '../../libs/jobs/src/testing/client';
import { exitCode, runCli, type DaemonProcess } from '../support/daemon';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, workerEnvIn } from '../support/system';

jest.setTimeout(120_000);

/** One worker host: a data folder, experiments, a key; the daemon can be (re)started on it. */
interface Host {
  data: string;
  ranLog: string;
  env: Record<string, string>;
  api: JobsClient;
  apiPort: number;
  daemon?: DaemonProcess;
  start(): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

async function host(
  redis: TestRedis | undefined,
  extra: Record<string, string> = {},
  sleepSeconds = 30,
): Promise<Host> {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-e2e-jobs-'));
  const data = path.join(dir, 'data');
  const experiments = path.join(dir, 'experiments');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(experiments);
  const ranLog = path.join(dir, 'ran.log');
  writeTestExperiments(experiments, ranLog, sleepSeconds);
  const { env, api: apiPort } = await workerEnvIn(dir, keygen(dir), {
    folders: { data, experiments },
    name: 'e2e-worker',
    redisUrl: redis?.url,
    extra,
  });
  const h: Host = {
    data,
    ranLog,
    env,
    apiPort,
    api: new JobsClient(`http://127.0.0.1:${apiPort}`),
    start: async () => {
      h.daemon = runCli(['worker'], env);
      await h.daemon.waitForLog('worker ready', 30_000);
    },
    stop: async (signal = 'SIGTERM') => {
      await h.daemon?.stop(signal);
    },
  };
  return h;
}

/** A process that exists and is not a zombie (this container's pid 1 may never reap them). */
const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

/** Live processes whose environment points at this host's ran.log, once kills have landed. */
async function jobProcessesSettled(h: Host): Promise<number[]> {
  const find = () =>
    readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
      .filter((pid) => {
        try {
          return alive(pid) && readFileSync(`/proc/${pid}/environ`, 'latin1').includes(h.ranLog);
        } catch {
          return false;
        }
      });
  // Up to 15 s: on a loaded 2-core CI machine the launcher can take seconds to see its parent die.
  for (let i = 0; i < 150 && find().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  return find();
}

/** What a surviving process is, for the failure message: pid, state, parent, command line. */
const describeProcess = (pid: number): string => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ').trim();
    return `${pid} state ${state} ppid ${ppid}: ${cmd}`;
  } catch {
    return `${pid} (gone)`;
  }
};

const ranCounts = (h: Host): Record<string, number> => {
  const counts: Record<string, number> = {};
  if (!existsSync(h.ranLog)) return counts;
  for (const id of readFileSync(h.ranLog, 'utf8').split('\n').filter(Boolean))
    counts[id] = (counts[id] ?? 0) + 1;
  return counts;
};

describe('worker job API, built daemon with its embedded Redis', () => {
  let h: Host;

  beforeAll(async () => {
    h = await host(undefined, { WORKER_CONCURRENCY: '1' });
    await h.start();
  });
  afterAll(async () => {
    await h?.stop();
  });

  it('runs a submitted job to success with progress events and a downloadable file', async () => {
    const id = await h.api.submit('hello', { name: 'Grace' });
    const events = await h.api.events(id);
    const states = events.filter((e) => e.event === 'state').map((e) => e.data.state);
    expect(states).toContain('running');
    expect(states[states.length - 1]).toBe('succeeded');
    const progress = events.map((e) => e.data.progress);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    expect(new Set(progress).size).toBeGreaterThan(2);
    const files = await h.api.call('GET', `/jobs/${id}/files`);
    expect(files.body.files).toEqual([{ path: 'hello.txt', size: expect.any(Number) }]);
    const file = await h.api.call('GET', `/jobs/${id}/files/hello.txt`);
    expect(file.status).toBe(200);
    expect(file.body).toContain('Grace');
    const logs = await h.api.call('GET', `/jobs/${id}/logs`);
    expect(logs.body).toContain('::progress:: 99 step 3');
  });

  it('follows the logs of a running job until it ends', async () => {
    const id = await h.api.submit('hello', { name: 'Linus' });
    const res = await fetch(`${h.api.base}/jobs/${id}/logs?follow=1`);
    const text = await res.text();
    expect(text).toContain('::progress:: 33 step 1');
    expect(text).toContain('::progress:: 99 step 3');
    expect((await h.api.job(id)).state).toBe('succeeded');
  });

  it('cancels a queued job (it never starts) and a running one (it ends cancelled)', async () => {
    const running = await h.api.submit('once');
    await h.api.waitFor(running, ['running']);
    const queued = await h.api.submit('quick');
    expect((await h.api.call('DELETE', `/jobs/${queued}`)).body.state).toBe('cancelled');
    await h.api.call('DELETE', `/jobs/${running}`);
    expect(await h.api.waitFor(running, ['cancelled', 'failed', 'succeeded'])).toMatchObject({
      state: 'cancelled',
    });
    const after = await h.api.submit('quick');
    await h.api.waitFor(after, ['succeeded']);
    expect(await h.api.job(queued)).toMatchObject({ state: 'cancelled', startedAt: null });
  });

  it('fails a job that runs past its timeout with "timeout"', async () => {
    const id = await h.api.submit('slow-timeout');
    expect(await h.api.waitFor(id, ['failed', 'succeeded'])).toMatchObject({
      state: 'failed',
      error: 'timeout',
    });
  });

  it('refuses invalid params with 400 naming the field, and an unknown experiment with 404', async () => {
    const bad = await h.api.call('POST', '/jobs', { experiment: 'hello', params: {} });
    expect(bad.status).toBe(400);
    expect(bad.body).toEqual({
      statusCode: 400,
      error: 'Bad Request',
      message: 'params.name is required',
    });
    const unknown = await h.api.call('POST', '/jobs', { experiment: 'no-such-thing', params: {} });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toBe('Not Found');
  });

  it('answers every path traversal attempt with a 4xx and never the file', async () => {
    const id = await h.api.submit('hello', { name: 'Eve' });
    await h.api.waitFor(id, ['succeeded']);
    const attempts = [
      `/jobs/${id}/files/../params.json`,
      `/jobs/${id}/files/../../../../../../etc/passwd`,
      `/jobs/${id}/files/..%2fparams.json`,
      `/jobs/${id}/files/%2e%2e/params.json`,
      `/jobs/${id}/files/%2e%2e%2fparams.json`,
      `/jobs/${id}/files/%252e%252e%252fparams.json`,
      `/jobs/${id}/files/%2fetc%2fpasswd`,
      `/jobs/${id}/files//etc/passwd`,
      `/jobs/${id}/files/passwd`,
      `/jobs/${id}/files/hello.txt%00.png`,
      `/jobs/${id}/files/.%2e/job.json`,
      `/jobs/..%2f..%2fetc/files/passwd`,
      `/jobs/${id.toUpperCase()}x/files/hello.txt`,
    ];
    for (const p of attempts) {
      const r = await rawGet(h.apiPort, p);
      expect({ p, status: r.status >= 400 && r.status < 500 }).toEqual({ p, status: true });
      expect(r.body).not.toMatch(/root:|"name"|"experiment"/);
    }
  });

  it('replaces its embedded Redis left over from a SIGKILLed run, keeping the queue', async () => {
    const before = await h.api.submit('hello', { name: 'Before' });
    await h.api.waitFor(before, ['succeeded']);
    await h.stop('SIGKILL');
    const leftover = Number(readFileSync(path.join(h.data, 'redis', 'redis.pid'), 'utf8'));
    expect(alive(leftover)).toBe(true);
    await h.start();
    expect(h.daemon!.stderr()).toContain(
      'stopping the embedded redis-server left by a previous run',
    );
    expect(alive(leftover)).toBe(false);
    expect((await h.api.job(before)).state).toBe('succeeded');
    const after = await h.api.submit('hello', { name: 'After' });
    expect((await h.api.waitFor(after, ['succeeded', 'failed'])).state).toBe('succeeded');
  });

  it('serves the OpenAPI document and Swagger UI', async () => {
    const doc = await h.api.call('GET', '/docs-json');
    expect(doc.body.paths['/jobs']).toBeDefined();
    const ui = await fetch(`${h.api.base}/docs`);
    expect(ui.status).toBe(200);
    expect(await ui.text()).toContain('swagger');
  });
});

describe('worker start', () => {
  it('stops at start on a bad experiment file, naming the file and the field', async () => {
    const h = await host(undefined);
    writeFileSync(
      path.join(h.env.EXPERIMENTS_DIR, 'broken.yaml'),
      'name: broken\nrunner: process\ncommand: []\nparams: {}\n',
    );
    const p = runCli(['worker'], h.env);
    expect(await exitCode(p)).toBe(1);
    expect(p.stderr()).toContain(
      'broken.yaml: command must be a list of strings, like [python, train.py]: the program and its arguments',
    );
  });
});

describe('worker restarts and Redis restarts', () => {
  let redis: TestRedis;

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  it('ends every job exactly once after the worker is SIGKILLed mid-queue and restarted', async () => {
    const h = await host(redis, { WORKER_CONCURRENCY: '2' }, 4);
    await h.start();
    const once = await h.api.submit('once'); // attempts: 1
    const retried = await h.api.submit('sleepy'); // attempts: 2
    await h.api.waitFor(once, ['running']);
    await h.api.waitFor(retried, ['running']);
    const queued = [
      await h.api.submit('sleepy'),
      await h.api.submit('sleepy'),
      await h.api.submit('sleepy'),
    ];
    await h.stop('SIGKILL');
    // No job process outlives its worker (the spawn helper kills them when the worker dies).
    expect((await jobProcessesSettled(h)).map(describeProcess)).toEqual([]);
    await h.start();
    try {
      expect(await h.api.waitFor(once, ['failed', 'succeeded'], 60_000)).toMatchObject({
        state: 'failed',
        error: 'worker restarted',
      });
      expect(await h.api.waitFor(retried, ['succeeded', 'failed'], 60_000)).toMatchObject({
        state: 'succeeded',
        attempts: 2,
      });
      for (const id of queued)
        expect((await h.api.waitFor(id, ['succeeded', 'failed'], 60_000)).state).toBe('succeeded');
      // Each sleepy job completed its work exactly once: the orphan of the killed worker did not.
      expect(ranCounts(h)).toEqual(Object.fromEntries([retried, ...queued].map((id) => [id, 1])));
    } finally {
      await h.stop();
    }
  });

  it('hands a running job back on SIGTERM and runs it again after the restart', async () => {
    const h = await host(redis, { WORKER_CONCURRENCY: '1' }, 2);
    await h.start();
    const id = await h.api.submit('sleepy');
    await h.api.waitFor(id, ['running']);
    expect(await h.daemon!.stop('SIGTERM')).toBe(0);
    expect(h.daemon!.stderr()).toContain('job queue stopped');
    await h.start();
    try {
      const rec = await h.api.waitFor(id, ['succeeded', 'failed'], 60_000);
      // The interrupted try was given back: it does not count against attempts.
      expect(rec).toMatchObject({ state: 'succeeded', attempts: 1 });
      expect(ranCounts(h)).toEqual({ [id]: 1 });
    } finally {
      await h.stop();
    }
  });

  it('stops on SIGTERM while clients follow events and logs, ending their connections', async () => {
    const h = await host(redis, { WORKER_CONCURRENCY: '1' }, 30);
    await h.start();
    const id = await h.api.submit('sleepy');
    await h.api.waitFor(id, ['running']);
    // Two long-lived answers that would otherwise hold the HTTP server's close.
    const base = `http://127.0.0.1:${h.apiPort}`;
    const follows = [`${base}/jobs/${id}/events`, `${base}/jobs/${id}/logs?follow=1`].map(
      async (url) => {
        const res = await fetch(url);
        try {
          await res.text();
          return 'ended';
        } catch {
          return 'cut';
        }
      },
    );
    await new Promise((r) => setTimeout(r, 300));
    const stopped = h.daemon!.stop('SIGTERM');
    // Well before the 270 s stop deadline (a stop held by them took that long before).
    const first = await Promise.race([
      stopped,
      new Promise((r) => setTimeout(() => r('still running after 20 s'), 20_000)),
    ]);
    expect(first).toBe(0);
    for (const f of await Promise.all(follows)) expect(['ended', 'cut']).toContain(f);
  });

  it('still runs queued jobs after Redis is killed and restarted from its AOF', async () => {
    const h = await host(redis, { WORKER_CONCURRENCY: '1' }, 1);
    await h.start();
    try {
      const ids = [
        await h.api.submit('sleepy'),
        await h.api.submit('sleepy'),
        await h.api.submit('sleepy'),
      ];
      await h.api.waitFor(ids[0], ['running']);
      redis.kill();
      await new Promise((r) => setTimeout(r, 1500));
      await redis.start();
      for (const id of ids)
        expect((await h.api.waitFor(id, ['succeeded', 'failed'], 60_000)).state).toBe('succeeded');
      expect(ranCounts(h)).toEqual(Object.fromEntries(ids.map((id) => [id, 1])));
    } finally {
      await h.stop();
    }
  });
});
