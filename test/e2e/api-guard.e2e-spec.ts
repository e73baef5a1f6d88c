import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { writeTestExperiments } from '../../libs/jobs/src/testing/client';
import { BIN, runCli, type DaemonProcess } from '../support/daemon';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, workerEnvIn } from '../support/system';

jest.setTimeout(120_000);

/**
 * The built worker's front door: which Host names and Origins it serves (API_HOSTS), bull-board's
 * admin actions from another site, the CLI's multipart upload (fields before files), and a Redis
 * password that must not reach the log.
 */
const PASSWORD = `pw-${randomBytes(9).toString('hex')}`;

/** One raw HTTP exchange (headers exactly as given); the status code and the body. */
function raw(port: number, head: string, body = ''): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let got = '';
    const s = connect(port, '127.0.0.1', () => s.write(`${head}\r\n\r\n${body}`));
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('error', reject);
    s.on('close', () =>
      resolve({
        status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(got)?.[1] ?? 0),
        body: got.slice(got.indexOf('\r\n\r\n') + 4),
      }),
    );
  });
}

const get = (port: number, host: string | undefined, target = '/jobs?limit=1') =>
  raw(
    port,
    [`GET ${target} HTTP/1.1`, ...(host ? [`Host: ${host}`] : []), 'Connection: close'].join(
      '\r\n',
    ),
  );

describe('worker API guard (API_HOSTS, Origin) and redaction', () => {
  let dir: string;
  let redis: TestRedis;
  let worker: DaemonProcess;
  let port: number;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-guard-'));
    redis = await startRedis();
    spawnSync('redis-cli', ['-p', String(redis.port), 'config', 'set', 'requirepass', PASSWORD]);
    const experiments = path.join(dir, 'experiments');
    mkdirSync(experiments);
    writeTestExperiments(experiments);
    const w = await workerEnvIn(dir, keygen(dir), {
      folders: { data: path.join(dir, 'data'), experiments },
      redisUrl: `redis://:${PASSWORD}@127.0.0.1:${redis.port}/0`,
      extra: { API_HOSTS: 'gpu1.example.org', QUEUE_UI: 'admin' },
    });
    port = w.api;
    worker = runCli(['worker'], w.env);
    await worker.waitForLog('worker ready', 60_000);
  });

  afterAll(async () => {
    await worker?.stop();
    redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves loopback names with any port, API_LISTEN, API_HOSTS names, and no Host at all', async () => {
    for (const host of [
      `127.0.0.1:${port}`,
      'localhost:8001',
      '127.0.0.7',
      '[::1]:3000',
      'GPU1.example.org:443',
    ]) {
      expect([host, (await get(port, host)).status]).toEqual([host, 200]);
    }
    const http10 = await raw(port, 'GET /test HTTP/1.0');
    expect([http10.status, http10.body]).toEqual([200, '{"response":"ok"}']);
  });

  it('answers 421 to any other Host, naming API_HOSTS, on every route', async () => {
    for (const target of ['/jobs', '/test', '/health/live', '/metrics', '/queues', '/docs']) {
      const r = await get(port, 'attacker.example', target);
      expect([target, r.status]).toEqual([target, 421]);
      expect(JSON.parse(r.body)).toEqual({
        statusCode: 421,
        error: 'Misdirected Request',
        message: expect.stringContaining('add the name to API_HOSTS on the worker'),
      });
    }
  });

  it("refuses bull-board's admin actions from another site, and serves them without Origin", async () => {
    const queues = `http://127.0.0.1:${port}/queues/api/queues`;
    const paused = async () =>
      (
        (await (await fetch(queues)).json()) as { queues: { name: string; isPaused: boolean }[] }
      ).queues.find((q) => q.name === 'gsc-cpu')?.isPaused;
    try {
      const cross = await fetch(`${queues}/gsc-cpu/pause`, {
        method: 'PUT',
        headers: { origin: 'http://attacker.example' },
      });
      expect(cross.status).toBe(403);
      expect(await paused()).toBe(false);
      expect((await fetch(`${queues}/gsc-cpu/pause`, { method: 'PUT' })).status).toBe(200);
      expect(await paused()).toBe(true);
      const own = await fetch(`${queues}/gsc-cpu/resume`, {
        method: 'PUT',
        headers: { origin: `http://127.0.0.1:${port}` },
      });
      expect(own.status).toBe(200);
      expect(await paused()).toBe(false);
    } finally {
      // Whatever failed above, the queue runs again for the tests after this one.
      await fetch(`${queues}/gsc-cpu/resume`, { method: 'PUT' });
    }
  });

  it('takes submissions from allowed origins, and reads from any', async () => {
    const submit = (origin: string) =>
      fetch(`http://127.0.0.1:${port}/jobs`, {
        method: 'POST',
        headers: { origin, 'content-type': 'application/json' },
        body: JSON.stringify({ experiment: 'quick', params: {} }),
      });
    expect((await submit('http://localhost:5173')).status).toBe(201);
    expect((await submit('https://gpu1.example.org')).status).toBe(201);
    expect((await submit('https://gpu1.example.org.attacker.example')).status).toBe(403);
    expect((await submit('null')).status).toBe(403);
    // A read needs no guard: without CORS headers the other site's page cannot see the answer.
    const read = await fetch(`http://127.0.0.1:${port}/jobs?limit=1`, {
      headers: { origin: 'http://attacker.example' },
    });
    expect(read.status).toBe(200);
  });

  it('`jobs submit --file` uploads its files (fields first), and they reach the job', async () => {
    const a = path.join(dir, 'a.csv');
    const b = path.join(dir, 'b.bin');
    writeFileSync(a, 'x,y\n1,2\n');
    writeFileSync(b, randomBytes(300_000));
    const run = (...args: string[]) =>
      spawnSync(BIN, ['jobs', ...args, '--url', `http://127.0.0.1:${port}`], {
        encoding: 'utf8',
        timeout: 60_000,
        env: { PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` },
      });
    const sub = run('submit', 'copy-input', '--params', '{}', '--file', a, '--file', b);
    expect([sub.status, sub.stderr]).toEqual([0, '']);
    const id = sub.stdout.trim();
    expect(run('watch', id).status).toBe(0);
    const files = (await (await fetch(`http://127.0.0.1:${port}/jobs/${id}/files`)).json()) as {
      files: { path: string; size: number }[];
    };
    expect(files.files).toEqual([
      { path: 'a.csv', size: 8 },
      { path: 'b.bin', size: 300_000 },
    ]);
  });

  it('never writes the Redis password to its log or /health', async () => {
    const health = await (await fetch(`http://127.0.0.1:${port}/health`)).text();
    const log = worker.stdout() + worker.stderr();
    expect(log).toContain(`"redisUrl":"redis://:***@127.0.0.1:${redis.port}/0"`);
    expect(log).not.toContain(PASSWORD);
    expect(health).not.toContain(PASSWORD);
  });
});
