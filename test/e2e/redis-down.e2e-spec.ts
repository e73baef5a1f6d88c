import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exitCode, runCli, type DaemonProcess } from '../support/daemon';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, waitUntil, workerEnvIn } from '../support/system';

jest.setTimeout(120_000);

/**
 * Redis going away under a running worker, as a person meets it: /health, /health/ready and
 * /metrics still answer at once, naming Redis with its URL (password hidden) and the error, and
 * `gpu-sidecar status` says which part is down instead of "nothing answers".
 */
const PASSWORD = 'pw-Zq8t!';
/** A generous bound for "answers in bounded time" (each probe gives up after 2 s). */
const HEALTH_BOUND_MS = 5_000;

describe('a worker whose Redis went away', () => {
  let redis: TestRedis;
  let dir: string;
  let worker: DaemonProcess;
  let api: string;
  const url = () => `redis://ada:***@127.0.0.1:${redis.port}/2`;

  beforeAll(async () => {
    redis = await startRedis();
    // A user with a password; `default` stays open for the test helpers (redis-cli ping).
    const acl = spawnSync(
      'redis-cli',
      [
        '-p',
        String(redis.port),
        'ACL',
        'SETUSER',
        'ada',
        'on',
        `>${PASSWORD}`,
        '~*',
        '&*',
        '+@all',
      ],
      { encoding: 'utf8' },
    );
    expect(acl.stdout.trim()).toBe('OK');
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-redis-down-'));
    const w = await workerEnvIn(dir, keygen(dir), {
      redisUrl: `redis://ada:${PASSWORD}@127.0.0.1:${redis.port}/2`,
      // Probes every 200 ms, so a change shows at once.
      extra: { GPU_SAMPLE_INTERVAL: '200ms' },
    });
    api = `http://127.0.0.1:${w.api}`;
    worker = runCli(['worker'], w.env);
    await worker.waitForLog('worker ready', 60_000);
    redis.kill();
    // Down for a while, as when a person notices: BullMQ's reconnects have backed off to
    // seconds apart (e^n ms, one 'queue connection error' per queue and try), and a command
    // sent now waits out several of them. That is when /health used to take over a minute.
    await waitUntil(
      'BullMQ reconnects backed off',
      () => worker.stderr().split('queue connection error').length - 1 >= 16,
      60_000,
    );
  });

  afterAll(async () => {
    await worker?.stop('SIGKILL');
    redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** GETs `route`; the status, body and how long the answer took. */
  async function timed(route: string) {
    const started = performance.now();
    const res = await fetch(`${api}${route}`, { signal: AbortSignal.timeout(60_000) });
    const body = await res.text();
    return { status: res.status, body, ms: performance.now() - started };
  }

  it('/health, /health/ready and /metrics answer in bounded time, naming Redis and the cause', async () => {
    const [health, ready, metrics, again] = await Promise.all([
      timed('/health'),
      timed('/health/ready'),
      timed('/metrics'),
      timed('/health'),
    ]);
    for (const r of [health, ready, metrics, again]) expect(r.ms).toBeLessThan(HEALTH_BOUND_MS);
    expect(health.status).toBe(503);
    const h = JSON.parse(health.body) as { problems: string[]; redis: Record<string, unknown> };
    expect(h.problems[0]).toMatch(
      new RegExp(
        `^redis: Redis at ${url().replace(/[*.]/g, '\\$&')} is down: connect ECONNREFUSED 127\\.0\\.0\\.1:${redis.port}`,
      ),
    );
    expect(h.redis).toMatchObject({ up: false, url: url() });
    expect(ready.status).toBe(503);
    expect(ready.body).toContain('ECONNREFUSED');
    expect(metrics.status).toBe(200);
    expect(metrics.body).toMatch(/^redis_up\{daemon="worker"\} 0$/m);
    for (const r of [health, ready, metrics]) expect(r.body).not.toContain(PASSWORD);
  });

  it('status names Redis with its URL, password hidden, and the error, and exits 1', async () => {
    const s = runCli(['status', '--url', api], {});
    expect(await exitCode(s, 60_000)).toBe(1);
    const out = s.stdout();
    expect(out).toContain(`at ${api}: down (not ready)`);
    expect(out).toContain(
      `! redis: Redis at ${url()} is down: connect ECONNREFUSED 127.0.0.1:${redis.port}`,
    );
    expect(out).not.toContain('nothing answers');
    expect(out + s.stderr()).not.toContain(PASSWORD);
  });
});
