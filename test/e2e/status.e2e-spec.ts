import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
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
    expect(out).toContain(`relay at ${admin}: up`);
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
    expect(s.stdout).toContain(`relay at ${admin}: up`);
  });

  it('jobs list prints the newest jobs, filters them, and gives JSON with --json', async () => {
    const jobs = new JobsClient(api);
    const id = await jobs.submit('hello', { name: 'Lister' });
    await jobs.waitFor(id, ['succeeded']);
    const all = await cli(['jobs', 'list', '--url', api]);
    expect(all.stderr).toBe('');
    expect(all.code).toBe(0);
    const lines = all.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID +EXPERIMENT +STATE +PROGRESS +CREATED +ERROR$/);
    expect(lines[1]).toMatch(new RegExp(`^${id} +hello +succeeded +100% +\\d{4}-\\d\\d-\\d\\dT`));
    expect(all.stdout).toMatch(/ flaky +failed +\d+% .*exited with code 7/);
    expect(all.stdout).not.toContain(ESC);
    const failed = await cli(['jobs', 'list', '--state', 'failed', '--limit', '5', '--url', api]);
    expect(failed.code).toBe(0);
    expect(failed.stdout).not.toContain(id);
    expect(failed.stdout).toContain(' flaky ');
    const json = await cli(['jobs', 'list', '--experiment', 'hello', '--json', '--url', api]);
    const parsed = JSON.parse(json.stdout) as { id: string; experiment: string }[];
    expect(parsed[0].id).toBe(id);
    expect(parsed.every((j) => j.experiment === 'hello')).toBe(true);
    const bad = await cli(['jobs', 'list', '--state', 'done', '--url', api]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('gpu-sidecar jobs: 400: state must be one of');
  });

  it('jobs get streams an output file to disk, refuses to overwrite without --force, and writes to stdout with -o -', async () => {
    const jobs = new JobsClient(api);
    const id = await jobs.submit('hello', { name: 'Getter' });
    await jobs.waitFor(id, ['succeeded']);
    const here = mkdtempSync(path.join(tmpdir(), 'gsc-get-'));
    const first = await cli(['jobs', 'get', id, 'hello.txt', '--url', api], {}, here);
    expect(first.code).toBe(0);
    expect(first.stdout).toBe('');
    const file = path.join(here, 'hello.txt');
    const want = readFileSync(
      path.join(pair.dir, 'data', 'jobs', 'hello', id, 'output', 'hello.txt'),
    );
    expect(readFileSync(file)).toEqual(want);
    expect(first.stderr).toBe(`wrote hello.txt (${want.length} bytes)\n`);

    writeFileSync(file, 'mine');
    const again = await cli(['jobs', 'get', id, 'hello.txt', '--url', api], {}, here);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('hello.txt exists: use --force to overwrite it, or -o PATH');
    expect(readFileSync(file, 'utf8')).toBe('mine');
    const forced = await cli(['jobs', 'get', id, 'hello.txt', '--force', '--url', api], {}, here);
    expect(forced.code).toBe(0);
    expect(readFileSync(file)).toEqual(want);

    const other = path.join(here, 'sub-out.txt');
    expect((await cli(['jobs', 'get', id, 'hello.txt', '-o', other, '--url', api])).code).toBe(0);
    expect(readFileSync(other)).toEqual(want);
    const folder = mkdtempSync(path.join(tmpdir(), 'gsc-get-into-'));
    expect((await cli(['jobs', 'get', id, 'hello.txt', '-o', folder, '--url', api])).code).toBe(0);
    expect(readFileSync(path.join(folder, 'hello.txt'))).toEqual(want);
    const out = await cli(['jobs', 'get', id, 'hello.txt', '-o', '-', '--url', api]);
    expect(out.code).toBe(0);
    expect(out.stdout).toBe(want.toString());

    // A file the job did not write (or a link out of its folder): the API's 404, no file left.
    for (const name of ['missing.txt', 'passwd']) {
      const r = await cli(['jobs', 'get', id, name, '--url', api], {}, here);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^gpu-sidecar jobs: 4\d\d: /);
      expect(existsSync(path.join(here, name))).toBe(false);
    }
  });

  it('jobs cancel on a job that had ended exits 1 and says so, touching nothing', async () => {
    const jobs = new JobsClient(api);
    const id = await jobs.submit('quick');
    await jobs.waitFor(id, ['succeeded']);
    const c = await cli(['jobs', 'cancel', id, '--url', api]);
    expect(c.code).toBe(1);
    expect(c.stdout).toBe('');
    expect(c.stderr).toMatch(
      new RegExp(
        `^gpu-sidecar jobs: job ${id} had already ended: succeeded at \\d{4}-.*; nothing to cancel\\n$`,
      ),
    );
    expect((await jobs.job(id)).state).toBe('succeeded');
  });

  it('status into a pipe that closes early (status | head -1) ends quietly with its own exit code', async () => {
    const piped = spawnSync(
      'bash',
      ['-c', `set -o pipefail; ${BIN} status --url ${api} --relay-url ${admin} | head -1`],
      {
        encoding: 'utf8',
        env: { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` },
      },
    );
    expect(piped.stdout).toBe(`worker gpu-host-1 at ${api}: degraded (ready)\n`);
    expect(piped.stderr).toBe('');
    expect(piped.status).toBe(0);
    // The reader gone before the first write: every write fails with EPIPE.
    const p = spawn(BIN, ['status', '--url', api, '--relay-url', admin], {
      env: { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    p.stdout.destroy();
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const [code] = (await once(p, 'exit')) as [number | null];
    expect(err).toBe('');
    expect(code).toBe(0);
  });

  it('jobs logs -f stops, quietly and with exit 0, once its reader is gone', async () => {
    const jobs = new JobsClient(api);
    const id = await jobs.submit('once'); // prints "started", then sleeps 30 s
    await jobs.waitFor(id, ['running']);
    try {
      const p = spawn(BIN, ['jobs', 'logs', id, '-f', '--url', api], {
        env: { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      p.stdout.destroy();
      let err = '';
      p.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const [code] = (await once(p, 'exit')) as [number | null];
      expect(err).toBe('');
      expect(code).toBe(0);
      // It stopped for the closed pipe, not because the job ended.
      expect((await jobs.job(id)).state).toBe('running');
    } finally {
      await fetch(`${api}/jobs/${id}`, { method: 'DELETE' });
    }
  });

  it('finds the job API at RELAY_LISTEN with a relay env file, and exits 1 while the relay is down', async () => {
    const relayEnv = path.join(pair.dir, 'relay.env');
    writeFileSync(
      relayEnv,
      `TUNNEL_CONNECT=ws://127.0.0.1:${pair.ports.tunnel}\n` +
        `RELAY_LISTEN=127.0.0.1:${pair.ports.relay}\nADMIN_LISTEN=127.0.0.1:${pair.ports.admin}\n`,
    );
    const viaRelay = `http://127.0.0.1:${pair.ports.relay}`;
    const s = await cli(['status', '--env-file', relayEnv]);
    expect(s.stderr).toBe('');
    expect(s.code).toBe(0);
    expect(s.stdout).toContain(`worker gpu-host-1 at ${viaRelay}: degraded (ready)`);
    expect(s.stdout).toContain(`relay at ${admin}: up`);
    const list = await cli(['jobs', 'list', '--limit', '1', '--env-file', relayEnv]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^ID +EXPERIMENT/);

    // A relay whose admin address does not answer: the relay is down, whatever the worker says.
    const gone = await freePort();
    const downEnv = path.join(pair.dir, 'relay-down.env');
    writeFileSync(
      downEnv,
      `RELAY_LISTEN=127.0.0.1:${pair.ports.relay}\nADMIN_LISTEN=127.0.0.1:${gone}\n`,
    );
    const d = await cli(['status', '--env-file', downEnv]);
    expect(d.code).toBe(1);
    expect(d.stdout).toContain(`worker gpu-host-1 at ${viaRelay}: degraded (ready)`);
    expect(d.stdout).toContain(
      `relay at http://127.0.0.1:${gone}: down: nothing answers (ECONNREFUSED)`,
    );
  });

  it('status exits 1 naming the tunnel and its last error when the relay has no tunnel up', async () => {
    const closed = await freePort();
    const lonelyAdmin = await freePort();
    const lonely = runCli(['relay'], {
      TUNNEL_KEY_FILE: pair.keyFile,
      TUNNEL_CONNECT: `ws://127.0.0.1:${closed}`,
      RELAY_LISTEN: `127.0.0.1:${await freePort()}`,
      ADMIN_LISTEN: `127.0.0.1:${lonelyAdmin}`,
      LOG_LEVEL: 'info',
    });
    try {
      await lonely.waitForLog('tunnel connection failed');
      const relayUrl = `http://127.0.0.1:${lonelyAdmin}`;
      const s = await cli(['status', '--url', api, '--relay-url', relayUrl]);
      expect(s.code).toBe(1);
      expect(s.stdout).toContain(`worker gpu-host-1 at ${api}: degraded (ready)`);
      expect(s.stdout).toMatch(
        new RegExp(
          `relay at ${relayUrl}: down: no tunnel up \\(ws://127\\.0\\.0\\.1:${closed}/? \\w+: .*ECONNREFUSED`,
        ),
      );
    } finally {
      await lonely.stop();
    }
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
