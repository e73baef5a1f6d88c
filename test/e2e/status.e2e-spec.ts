import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { JobsClient, writeTestExperiments } from '../../libs/jobs/src/testing/client';
import { BIN, exitCode, runCli } from '../support/daemon';
import { freePort } from '../support/ports';
import { startRedis, type TestRedis } from '../support/redis';
import { startPair, type Pair } from '../support/system';

jest.setTimeout(180_000);

/**
 * `gpu-sidecar status` and `gpu-sidecar jobs submit|watch|logs|cancel`, run as processes against
 * a running relay + worker (the worker with the two-GPU fake nvidia-smi on PATH).
 */
const FIXTURES = path.join(__dirname, '..', 'fixtures', 'nvidia-smi');
const ESC = '\u001b';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

async function cli(
  args: string[],
  env: Record<string, string> = {},
  cwd?: string,
  program?: string,
): Promise<Run> {
  if (program) {
    const r = spawnSync(program, args, {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` },
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }
  const p = runCli(args, env, cwd);
  const code = await exitCode(p, 60_000);
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}

describe('gpu-sidecar status and jobs against a running worker', () => {
  let redis: TestRedis;
  let pair: Pair;
  let api: string;
  let admin: string;

  beforeAll(async () => {
    redis = await startRedis();
    pair = await startPair({
      worker: {
        PATH: `${path.join(FIXTURES, 'two-gpus')}:${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`,
        REDIS_URL: redis.url,
        GPU_DEVICES: 'all',
        WORKER_NAME: 'gpu-host-1',
      },
    });
    writeTestExperiments(path.join(pair.dir, 'experiments'));
    await pair.worker.stop();
    await pair.restartWorker(); // with the test experiments
    api = `http://127.0.0.1:${pair.ports.api}`;
    admin = `http://127.0.0.1:${pair.ports.admin}`;
  });

  afterAll(async () => {
    await pair?.stop();
    redis?.stop();
  });

  it('jobs submit prints the id; jobs watch follows it to the end and exits 0', async () => {
    const sub = await cli(['jobs', 'submit', 'hello', '--params', '{"name":"Ada"}', '--url', api]);
    expect(sub.stderr).toBe('');
    expect(sub.code).toBe(0);
    const id = sub.stdout.trim();
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    const w = await cli(['jobs', 'watch', id, '--url', api]);
    expect(w.code).toBe(0);
    expect(w.stdout).toBe(`succeeded ${id}\n`);
    expect(w.stderr).toContain('succeeded 100%');
    expect(w.stdout + w.stderr).not.toContain(ESC); // no colour without a terminal
    const logs = await cli(['jobs', 'logs', id, '--url', api]);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toContain('::progress:: 99 step 3');
  });

  it('jobs watch exits 1 for a failed job and for a cancelled one, saying so', async () => {
    const jobs = new JobsClient(api);
    const failed = await jobs.submit('flaky');
    const w = await cli(['jobs', 'watch', failed, '--url', api]);
    expect(w.code).toBe(1);
    expect(w.stdout).toMatch(new RegExp(`^failed ${failed}: .*7`));

    const long = await jobs.submit('once');
    await jobs.waitFor(long, ['running']);
    const watching = runCli(['jobs', 'watch', long, '--url', api], {});
    await watching.waitForLog('running');
    const c = await cli(['jobs', 'cancel', long, '--url', api]);
    expect(c.code).toBe(0);
    expect(c.stdout).toMatch(new RegExp(`^${long} (running|cancelled)\\n$`));
    expect(await exitCode(watching, 60_000)).toBe(1);
    expect(watching.stdout()).toBe(`cancelled ${long}\n`);
  });

  it('jobs commands name the problem of a bad request and exit 1', async () => {
    const unknown = await cli(['jobs', 'watch', randomUUID(), '--url', api]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^gpu-sidecar jobs: 404: /);
    const bad = await cli(['jobs', 'submit', 'nope', '--url', api]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('nope');
    const params = await cli(['jobs', 'submit', 'hello', '--params', '{bad', '--url', api]);
    expect(params.code).toBe(1);
    expect(params.stderr).toContain('--params must be JSON');
  });

  it('status prints tunnels, GPUs (the hot one unhealthy), queue and recent jobs, plain without a TTY', async () => {
    const s = await cli(['status', '--url', api, '--relay-url', admin]);
    expect(s.stderr).toBe('');
    expect(s.code).toBe(0);
    const out = s.stdout;
    process.stdout.write(out);
    expect(out).not.toContain(ESC);
    expect(out).toContain(`worker gpu-host-1 at ${api}: degraded (ready)`);
    expect(out).toContain('temperature 92 °C ≥ GPU_MAX_TEMP 90 °C');
    expect(out).toContain('relay: up');
    expect(out).toContain(`ws://127.0.0.1:${pair.ports.tunnel}`);
    expect(out).toMatch(/NVIDIA H100 80GB HBM3.*unhealthy: temperature 92 °C/);
    expect(out).toMatch(/NVIDIA GeForce RTX 4080 SUPER.*healthy.*46 °C.*7 %.*1\.4 \/ 16\.0/);
    expect(out).toMatch(/gsc-cpu/);
    expect(out).toMatch(/hello.*succeeded.*100 %/);
    expect(out).toMatch(/flaky.*failed/);
    for (const section of ['Tunnels', 'GPUs', 'Queue', 'Recent jobs'])
      expect(out).toContain(`${section}\n`);
  });

  it('status colours its output on a terminal (script(1) gives it one)', async () => {
    const cmd = `${BIN} status --url ${api} --relay-url ${admin}`;
    const s = await cli(['-qec', cmd, '/dev/null'], {}, undefined, 'script');
    expect(s.code).toBe(0);
    expect(s.stdout).toContain(`${ESC}[`);
    expect(s.stdout).toContain('NVIDIA H100 80GB HBM3');
  });

  it('status finds the worker from API_LISTEN in --env-file', async () => {
    const env = path.join(pair.dir, 'status.env');
    writeFileSync(
      env,
      `API_LISTEN=127.0.0.1:${pair.ports.api}\nADMIN_LISTEN=127.0.0.1:${pair.ports.admin}\n`,
    );
    const s = await cli(['status', '--env-file', env]);
    expect(s.code).toBe(0);
    expect(s.stdout).toContain(`worker gpu-host-1 at ${api}`);
    expect(s.stdout).toContain('relay: up');
  });

  it('status says clearly that nothing answers, and exits 1', async () => {
    const port = await freePort();
    const s = await cli([
      'status',
      '--url',
      `http://127.0.0.1:${port}`,
      '--relay-url',
      `http://127.0.0.1:${port}`,
    ]);
    expect(s.code).toBe(1);
    expect(s.stdout).toBe('');
    expect(s.stderr).toContain(`nothing answers at http://127.0.0.1:${port} (the worker API)`);
  });
});
