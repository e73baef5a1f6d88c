import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statfsSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JobsClient } from '../../libs/jobs/src/testing/client';
import { runCli, type DaemonProcess } from '../support/daemon';
import { TEST_IMAGE, testDockerHost } from '../support/docker';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, workerEnvIn } from '../support/system';
import { recordChaos, SCALE } from './support';

/**
 * The disk filling up during a job (issue #9, docs/RELIABILITY.md). DATA_FOLDER is a 20 MiB
 * tmpfs mounted here (as root); where mounting is refused, a fill file on DATA_FOLDER's own
 * filesystem leaves 20 MiB free instead (said on stdout). Jobs that fill it (output, log, or
 * output and then exit 0) end `failed` with "disk full", without a second try; nothing is ever
 * marked succeeded; new jobs get 507 while below MIN_FREE_DISK; once space is freed, jobs run again.
 * CHAOS_SCALE=full repeats the fill-and-recover round 5 times (default: once).
 */
const FULL = SCALE.full;
const ROUNDS = FULL ? 5 : 1;
const SIZE_MB = 20;

jest.setTimeout(FULL ? 20 * 60_000 : 5 * 60_000);

const FINAL = ['succeeded', 'failed', 'cancelled'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const experiments = (): Record<string, string> => ({
  // Writes output until the disk is full; cat then exits 1.
  'fill-output.yaml': `name: fill-output
runner: process
command: ["sh", "-c", "echo filling; cat /dev/zero > $JOB_OUTPUT/fill"]
attempts: 3
params: { type: object }
`,
  // Fills the disk, ignores the error and exits 0: its success cannot be recorded on disk.
  'fill-then-succeed.yaml': `name: fill-then-succeed
runner: process
command: ["sh", "-c", "cat /dev/zero > $JOB_OUTPUT/fill; exit 0"]
attempts: 3
params: { type: object }
`,
  // Floods stdout: the daemon's log write is what fails.
  'fill-log.yaml': `name: fill-log
runner: process
command: ["sh", "-c", "yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]
attempts: 3
timeout: 5m
params: { type: object }
`,
  'fill-docker.yaml': `name: fill-docker
runner: docker
image: ${TEST_IMAGE}
command: ["sh", "-c", "echo filling; cat /dev/zero > /job/output/fill"]
attempts: 3
params: { type: object }
`,
  'small.yaml': `name: small
runner: process
command: ["sh", "-c", "echo hello > $JOB_OUTPUT/hello.txt"]
params: { type: object }
`,
});

describe(`disk full (${FULL ? 'full' : 'short'}: ${ROUNDS} round(s))`, () => {
  let dir: string;
  let data: string;
  let mounted = false;
  let fillFile: string | undefined;
  let redis: TestRedis;
  let daemon: DaemonProcess | undefined;
  let api: JobsClient;
  const dockerHost = testDockerHost();
  const figures = { fillJobs: 0, failedDiskFull: 0, refused507: 0, recoveries: 0 };

  const freeBytes = () => {
    const s = statfsSync(data);
    return s.bavail * s.bsize;
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-chaos-disk-'));
    data = path.join(dir, 'data');
    mkdirSync(data);
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${SIZE_MB}m`, 'tmpfs', data], {
      encoding: 'utf8',
    });
    mounted = m.status === 0;
    if (!mounted) {
      // No tmpfs here: a fill file leaves SIZE_MB free on DATA_FOLDER's own filesystem.
      fillFile = path.join(data, 'fill.bin');
      const keep = SIZE_MB * 1024 * 1024;
      const size = Math.max(0, freeBytes() - keep);
      execFileSync('fallocate', ['-l', String(size), fillFile]);
      process.stdout.write(
        `disk-full: mount refused (${m.stderr.trim()}); a fill file of ${size} bytes leaves ${SIZE_MB} MiB free\n`,
      );
    }
    redis = await startRedis();
    const expDir = path.join(dir, 'experiments');
    mkdirSync(expDir);
    for (const [name, text] of Object.entries(experiments())) {
      writeFileSync(path.join(expDir, name), text);
    }
    const w = await workerEnvIn(dir, keygen(dir), {
      folders: { data, experiments: expDir },
      name: `disk-${process.pid}`,
      redisUrl: redis.url,
      extra: {
        DOCKER_HOST: dockerHost,
        // A quarter of the small disk: 5 MiB.
        MIN_FREE_DISK: `${(SIZE_MB / 4) * 1024 * 1024}`,
      },
    });
    daemon = runCli(['worker'], w.env);
    await daemon.waitForLog('worker ready', 120_000);
    api = new JobsClient(`http://127.0.0.1:${w.api}`);
  });

  afterAll(async () => {
    await daemon?.stop();
    redis?.stop();
    if (mounted) spawnSync('umount', ['-l', data]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const waitEnd = (id: string) => api.waitFor(id, FINAL, 120_000);

  /** Frees what the fill jobs wrote (and waits until the worker's 1 s disk reading is past). */
  const freeSpace = async () => {
    const jobs = path.join(data, 'jobs');
    for (const exp of readdirSync(jobs)) {
      for (const id of readdirSync(path.join(jobs, exp))) {
        rmSync(path.join(jobs, exp, id, 'output', 'fill'), { force: true });
        rmSync(path.join(jobs, exp, id, 'logs', 'output.log'), { force: true });
      }
    }
    await sleep(1_200);
  };

  /** POST /jobs until the worker sees the disk below MIN_FREE_DISK (it reads it once a second). */
  const expect507 = async () => {
    const before = (await api.call('GET', '/jobs?limit=1000')).body as unknown[];
    // Within the worker's 1 s free-space reading, a submission may meet the full disk itself:
    // 507 too ("disk full"), never a 5xx, never a job.
    let r = await api.call('POST', '/jobs', { experiment: 'small', params: {} });
    expect(r.status).toBe(507);
    expect(r.body).toMatchObject({ statusCode: 507, error: 'Insufficient Storage' });
    expect(r.body.message).toMatch(/below MIN_FREE_DISK|^disk full: no space left/);
    await sleep(1_100);
    r = await api.call('POST', '/jobs', { experiment: 'small', params: {} });
    expect(r.status).toBe(507);
    expect(r.body.message).toMatch(
      /^free disk space on .* below MIN_FREE_DISK .*; free some space/,
    );
    expect((await api.call('GET', '/jobs?limit=1000')).body).toHaveLength(before.length);
    figures.refused507 += 2;
  };

  const checkDiskFull = async (experiment: string) => {
    const r = await api.call('POST', '/jobs', { experiment, params: {} });
    expect(r.status).toBe(201);
    const rec = await waitEnd(r.body.id);
    // Failed "disk full" on the first try: not retried onto the same full disk.
    figures.fillJobs++;
    expect(rec).toMatchObject({ state: 'failed', error: 'disk full', attempts: 1 });
    figures.failedDiskFull++;
    expect(freeBytes()).toBeLessThan(SIZE_MB * 1024 * 1024);
    // The record on disk never says succeeded: it is the final one, or (the disk being full
    // when the job ended) an earlier one; Redis is the truth then.
    const file = path.join(data, 'jobs', experiment, r.body.id, 'job.json');
    const onDisk = JSON.parse(readFileSync(file, 'utf8')) as { state: string; error: string };
    expect(onDisk.state).not.toBe('succeeded');
    if (FINAL.includes(onDisk.state))
      expect(onDisk).toMatchObject({ state: 'failed', error: 'disk full' });
    // No half-written temporary record left behind.
    expect(readdirSync(path.dirname(file)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    await expect507();
    // Stays failed: nothing retries it meanwhile.
    await sleep(1_000);
    expect(await api.job(r.body.id)).toMatchObject({ state: 'failed', error: 'disk full' });
    return r.body.id as string;
  };

  const checkRecovers = async () => {
    await freeSpace();
    expect(freeBytes()).toBeGreaterThan((SIZE_MB / 2) * 1024 * 1024);
    const id = await api.submit('small');
    expect(await waitEnd(id)).toMatchObject({ state: 'succeeded' });
    expect(readFileSync(path.join(data, 'jobs', 'small', id, 'output', 'hello.txt'), 'utf8')).toBe(
      'hello\n',
    );
    figures.recoveries++;
  };

  for (let round = 1; round <= ROUNDS; round++) {
    for (const experiment of ['fill-output', 'fill-then-succeed', 'fill-log', 'fill-docker']) {
      it(`round ${round}: ${experiment} fills the disk → failed "disk full", 507 meanwhile, then jobs run again`, async () => {
        await checkRecovers();
        await checkDiskFull(experiment);
        await checkRecovers();
      });
    }
  }

  it('never marked a fill job succeeded, and the test used the small filesystem it meant to', async () => {
    const r = await api.call('GET', '/jobs?limit=1000');
    const fills = (r.body as { experiment: string; state: string }[]).filter((j) =>
      j.experiment.startsWith('fill-'),
    );
    expect(fills).toHaveLength(4 * ROUNDS);
    expect(fills.every((j) => j.state === 'failed')).toBe(true);
    recordChaos('disk-full', {
      scale: SCALE.name,
      filesystem: mounted ? `tmpfs ${SIZE_MB} MiB` : `fill file leaving ${SIZE_MB} MiB`,
      ...figures,
      markedSucceeded: fills.filter((j) => j.state === 'succeeded').length,
    });
    if (mounted)
      expect(statfsSync(data).blocks * statfsSync(data).bsize).toBe(SIZE_MB * 1024 * 1024);
    else expect(existsSync(fillFile!)).toBe(true);
  });
});
