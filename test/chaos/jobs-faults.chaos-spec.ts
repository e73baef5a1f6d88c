import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JOB_LABELS } from '../../libs/docker/src';
import { DockerEngine } from '../../libs/jobs/src';
import { JobsClient } from '../../libs/jobs/src/testing/client';
import { ROOT, runCli, type DaemonProcess } from '../support/daemon';
import { TEST_IMAGE } from '../support/docker';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, workerEnvIn } from '../support/system';
import { recordChaos, SCALE } from './support';

/**
 * Jobs under faults (issue #9, docs/RELIABILITY.md). Jobs of three experiments (Docker, process,
 * and a slow process one that fails sometimes) are submitted in waves while the built worker is
 * SIGKILLed, its Redis (AOF) is killed and restarted, and its Docker Engine (a private dockerd,
 * started here, so it can be stopped) is restarted. At the end every accepted job has exactly one
 * final state, a succeeded job ran to completion exactly once, no container is left, nothing is
 * queued or running, and job.json agrees with Redis.
 *
 * CHAOS_SCALE=full: 500 jobs, 5 worker kills, 2 Redis restarts, 1 dockerd restart.
 * Default (CI's `npm test`): 60 jobs, 2 worker kills, 1 Redis restart, 1 dockerd restart.
 */
const FULL = SCALE.full;
type Fault = 'kill-worker' | 'restart-redis' | 'restart-dockerd';
const PLAN: { jobs: number; faults: Fault[] } = FULL
  ? {
      jobs: 500,
      faults: [
        'kill-worker',
        'restart-redis',
        'kill-worker',
        'restart-dockerd',
        'kill-worker',
        'restart-redis',
        'kill-worker',
        'kill-worker',
      ],
    }
  : { jobs: 60, faults: ['kill-worker', 'restart-redis', 'restart-dockerd', 'kill-worker'] };

jest.setTimeout(FULL ? 45 * 60_000 : 10 * 60_000);

const FINAL = ['succeeded', 'failed', 'cancelled'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Each run that reaches its end leaves one mark: the process ones append their id to a ran-log,
// the Docker one writes a file with a unique name into its output (it can write nowhere else).
// A SIGTERM (dockerd stopping its containers) ends the Docker job at once while it works:
// `sh` as PID 1 would otherwise ignore it and dockerd would wait out its shutdown timeout. Its
// last step, the mark, ignores SIGTERM, as a job that commits its results should: sh runs a
// trap only after the command in progress, so a TERM that came during `touch` made it exit
// 143 after writing the mark, and the job, failed by the signal, ran again (a duplicate seen
// once in CI). A job killed by SIGKILL in that step still may run again; see RELIABILITY.md.
const experiments = (ranLog: string): Record<string, string> => ({
  'chaos-docker.yaml': `name: chaos-docker
runner: docker
image: ${TEST_IMAGE}
command: ["sh", "-c", "trap 'exit 143' TERM; echo '::progress:: 10 up'; sleep 1 & wait $!; trap '' TERM; touch /job/output/run.$(cat /proc/sys/kernel/random/uuid)"]
attempts: 5
params: { type: object }
`,
  'chaos-proc.yaml': `name: chaos-proc
runner: process
command: ["sh", "-c", "sleep 0.3; echo $JOB_ID >> ${ranLog}"]
attempts: 5
params: { type: object }
`,
  // mode fail: always exits 3; flaky: the first try exits 3; slow: a few seconds, then succeeds.
  'chaos-slow.yaml': `name: chaos-slow
runner: process
command: ["sh", "-c", "if grep -q fail $JOB_PARAMS; then exit 3; fi; if grep -q flaky $JOB_PARAMS && [ ! -e $JOB_OUTPUT/tried ]; then touch $JOB_OUTPUT/tried; exit 3; fi; sleep 3; echo $JOB_ID >> ${ranLog}"]
attempts: 4
params:
  type: object
  properties: { mode: { enum: [fail, flaky, slow] } }
  required: [mode]
`,
});

interface Submitted {
  id: string;
  experiment: string;
  mode?: string;
}

describe(`jobs under faults (${FULL ? 'full' : 'short'}: ${PLAN.jobs} jobs, ${PLAN.faults.join(', ')})`, () => {
  const worker = `chaos-${randomBytes(4).toString('hex')}`;
  let dir: string;
  let dockerDir: string;
  let dockerHost: string;
  let engine: DockerEngine;
  let redis: TestRedis;
  let daemon: DaemonProcess | undefined;
  let env: Record<string, string>;
  let api: JobsClient;
  let data: string;
  let ranLog: string;
  const eventsLog: string[] = [];
  const t0 = Date.now();
  const note = (text: string) => {
    const line = `${((Date.now() - t0) / 1000).toFixed(1)}s ${text}`;
    eventsLog.push(line);
    if (dir) appendFileSync(path.join(dir, 'events.log'), line + '\n');
  };

  /** Every worker process this test started, in order: their logs are kept with a failure. */
  const daemons: DaemonProcess[] = [];
  let passed = false;
  const startWorker = async () => {
    daemon = runCli(['worker'], env);
    daemons.push(daemon);
    await daemon.waitForLog('worker ready', 120_000);
  };

  const startDockerd = () => {
    dockerHost = execFileSync(path.join(ROOT, 'scripts', 'dockerd-private.sh'), [dockerDir], {
      encoding: 'utf8',
    }).trim();
  };
  const stopDockerd = async () => {
    const pidFile = path.join(dockerDir, 'dockerd.pid');
    if (!existsSync(pidFile)) return;
    const pid = Number(readFileSync(pidFile, 'utf8'));
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      return;
    }
    for (let i = 0; i < 1200; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        return;
      }
      await sleep(100);
    }
    throw new Error(`dockerd ${pid} did not stop within 120 s`);
  };

  const containers = async () => {
    for (let i = 0; ; i++) {
      try {
        return await engine.listByLabel(JOB_LABELS.worker, worker);
      } catch (err) {
        if (i > 50) throw err;
        await sleep(200);
      }
    }
  };

  /** POST /jobs, patient: retried (same idempotency key) while the worker or Redis is away. */
  const submit = async (experiment: string, params: unknown): Promise<string> => {
    const key = `chaos-${randomBytes(8).toString('hex')}`;
    for (let i = 0; ; i++) {
      try {
        const r = await api.call('POST', '/jobs', { experiment, params, key });
        if (r.status === 201 || r.status === 200) return r.body.id as string;
        if (r.status !== 503)
          throw new Error(`submit answered ${r.status} ${JSON.stringify(r.body)}`);
      } catch (err) {
        if (!/fetch failed|ECONNREFUSED|ECONNRESET|socket/i.test(String(err)) || i > 600) throw err;
      }
      await sleep(200);
    }
  };

  const countIn = async (state: string): Promise<number> => {
    const r = await api.call('GET', `/jobs?state=${state}&limit=1000`).catch(() => undefined);
    return r?.status === 200 ? (r.body as unknown[]).length : 0;
  };
  const runningCount = () => countIn('running');
  const endedCount = async () => (await countIn('succeeded')) + (await countIn('failed'));

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-chaos-jobs-'));
    // A private Docker Engine of this test alone, so it can be stopped and started.
    dockerDir = mkdtempSync('/tmp/gsc-chaos-dockerd-');
    try {
      startDockerd();
      execFileSync(path.join(ROOT, 'scripts', 'make-test-image.sh'), [TEST_IMAGE], {
        env: { ...process.env, DOCKER_HOST: dockerHost },
      });
    } catch (err) {
      throw new Error(
        `this test needs to start its own Docker Engine (root, docker.io, busybox-static): ${(err as Error).message}`,
      );
    }
    engine = new DockerEngine(dockerHost);
    redis = await startRedis();
    data = path.join(dir, 'data');
    ranLog = path.join(dir, 'ran.log');
    writeFileSync(ranLog, '');
    const expDir = path.join(dir, 'experiments');
    mkdirSync(expDir);
    for (const [name, text] of Object.entries(experiments(ranLog))) {
      writeFileSync(path.join(expDir, name), text);
    }
    const w = await workerEnvIn(dir, keygen(dir), {
      folders: { data, experiments: expDir },
      name: worker,
      redisUrl: redis.url,
      extra: { WORKER_CONCURRENCY: '4', DOCKER_HOST: dockerHost, MIN_FREE_DISK: '1' },
    });
    env = w.env;
    api = new JobsClient(`http://127.0.0.1:${w.api}`);
    await startWorker();
  });

  afterAll(async () => {
    await daemon?.stop('SIGKILL');
    if (engine) for (const c of await containers().catch(() => [])) await engine.remove(c.id);
    if (dockerDir) {
      await stopDockerd().catch(() => undefined);
      // The engine's data holds read-only layers; a plain rm can fail on busy mounts.
      spawnSync('rm', ['-rf', dockerDir]);
    }
    redis?.stop();
    if (!dir) return;
    daemons.forEach((d, i) => writeFileSync(path.join(dir, `worker-${i + 1}.log`), d.stderr()));
    if (passed && !process.env.CHAOS_KEEP) rmSync(dir, { recursive: true, force: true });
    else process.stdout.write(`chaos jobs-faults: kept ${dir} (worker logs, job folders)\n`);
  });

  it('every job ends exactly once, ran once if succeeded, leaves no container and agrees on disk', async () => {
    const submitted: Submitted[] = [];
    const waves = PLAN.faults.length + 1;
    const kinds = ['chaos-docker', 'chaos-proc', 'chaos-slow'];
    const modes = ['slow', 'flaky', 'slow', 'fail', 'slow', 'flaky'];
    let n = 0;
    const submitWave = async (count: number) => {
      for (let i = 0; i < count; i++, n++) {
        const experiment = kinds[n % kinds.length];
        const mode =
          experiment === 'chaos-slow' ? modes[Math.floor(n / 3) % modes.length] : undefined;
        const id = await submit(experiment, mode ? { mode } : {});
        submitted.push({ id, experiment, mode });
      }
    };
    const counts = { 'kill-worker': 0, 'restart-redis': 0, 'restart-dockerd': 0 };

    for (let w = 0; w < waves; w++) {
      const count = Math.floor(PLAN.jobs / waves) + (w < PLAN.jobs % waves ? 1 : 0);
      await submitWave(count);
      note(`wave ${w + 1}: ${count} jobs submitted (${submitted.length} in all)`);
      const fault = PLAN.faults[w];
      if (!fault) break;
      // Spread over the whole run: strike once about half of this wave has ended (at most
      // 2 min of waiting), and while jobs run.
      const target = submitted.length - Math.ceil(count / 2);
      for (let i = 0; i < 1200 && (await endedCount()) < target; i++) await sleep(100);
      for (let i = 0; i < 100 && (await runningCount()) < 2; i++) await sleep(100);
      await sleep(300 + Math.floor(Math.random() * 700));
      counts[fault]++;
      if (fault === 'kill-worker') {
        note(`SIGKILL worker (${await runningCount()} running)`);
        await daemon!.stop('SIGKILL');
        await sleep(500);
        await startWorker();
        note('worker back');
      } else if (fault === 'restart-redis') {
        note(`kill Redis (${await runningCount()} running)`);
        redis.kill();
        // Long enough for running jobs to end while it is away: their endings must wait it out.
        await sleep(3_000);
        await redis.start();
        note('Redis back');
      } else {
        note(`stop dockerd (${await runningCount()} running)`);
        await stopDockerd();
        note('dockerd stopped');
        await sleep(2_000);
        startDockerd();
        note('dockerd back');
      }
    }

    // Everything ends.
    const deadline = Date.now() + (FULL ? 30 : 6) * 60_000;
    const records = new Map<string, Record<string, unknown>>();
    for (const s of submitted) {
      for (;;) {
        const r = await api.call('GET', `/jobs/${s.id}`).catch(() => undefined);
        if (r?.status === 200 && FINAL.includes(r.body.state)) {
          records.set(s.id, r.body);
          break;
        }
        if (Date.now() > deadline) {
          records.set(s.id, r?.body ?? { state: 'unknown' });
          break;
        }
        await sleep(200);
      }
    }
    note('every submitted job looked at');
    // A few stalled-check intervals more: nothing changes, nothing runs a second time.
    await sleep(12_000);

    // Exactly one final state; whatever else Redis holds (a submission that failed half-way) is final too.
    const stuck: string[] = [];
    for (const state of ['queued', 'running']) {
      const r = await api.call('GET', `/jobs?state=${state}&limit=1000`);
      expect(r.status).toBe(200);
      for (const rec of r.body as { id: string }[]) stuck.push(`${rec.id} ${state}`);
    }
    const notFinal = submitted.filter((s) => !FINAL.includes(String(records.get(s.id)?.state)));

    // Runs that reached their end, per job.
    const completions = new Map<string, number>();
    for (const id of readFileSync(ranLog, 'utf8').split('\n').filter(Boolean)) {
      completions.set(id, (completions.get(id) ?? 0) + 1);
    }
    for (const s of submitted.filter((x) => x.experiment === 'chaos-docker')) {
      const out = path.join(data, 'jobs', s.experiment, s.id, 'output');
      const runs = readdirSync(out).filter((f) => f.startsWith('run.')).length;
      if (runs) completions.set(s.id, runs);
    }

    const duplicated: string[] = [];
    const inconsistent: string[] = [];
    const unclear: string[] = [];
    const diskMismatch: string[] = [];
    let succeeded = 0;
    let failed = 0;
    const failures: Record<string, number> = {};
    for (const s of submitted) {
      const rec = records.get(s.id)!;
      const now = await api.job(s.id);
      // Unchanged since it was first seen final.
      if (now.state !== rec.state || now.finishedAt !== rec.finishedAt) inconsistent.push(s.id);
      const ran = completions.get(s.id) ?? 0;
      if (ran > 1) {
        duplicated.push(
          `${s.id} (${s.experiment}) ran ${ran} times: ${JSON.stringify(await api.job(s.id))}`,
        );
      }
      if (rec.state === 'succeeded') {
        succeeded++;
        if (ran !== 1) inconsistent.push(`${s.id} succeeded but completed ${ran} times`);
        if (s.mode === 'fail') inconsistent.push(`${s.id} should fail`);
      } else if (rec.state === 'failed') {
        failed++;
        const error = String(rec.error);
        failures[error] = (failures[error] ?? 0) + 1;
        if (ran !== 0) inconsistent.push(`${s.id} failed (${error}) but completed ${ran} times`);
        if (
          !/^(exited with code \d+|worker restarted|lost the Docker Engine.*|not queued: submission failed)$/.test(
            error,
          )
        )
          unclear.push(`${s.id}: ${error}`);
      }
      const onDisk = JSON.parse(
        readFileSync(path.join(data, 'jobs', s.experiment, s.id, 'job.json'), 'utf8'),
      ) as Record<string, unknown>;
      for (const k of ['state', 'finishedAt', 'error', 'exitCode', 'attempts']) {
        if (onDisk[k] !== rec[k]) {
          diskMismatch.push(`${s.id} ${k}: disk ${String(onDisk[k])}, Redis ${String(rec[k])}`);
        }
      }
    }
    const left = await containers();
    const queueLeft = ['gsc-cpu', 'gsc-gpu']
      .flatMap((q) =>
        [
          ['LLEN', `bull:${q}:wait`],
          ['LLEN', `bull:${q}:active`],
          ['ZCARD', `bull:${q}:delayed`],
          ['ZCARD', `bull:${q}:prioritized`],
        ].map(([cmd, key]) => {
          const out = spawnSync('redis-cli', ['-p', String(redis.port), cmd, key], {
            encoding: 'utf8',
          }).stdout.trim();
          return Number(out) ? `${key}: ${out}` : '';
        }),
      )
      .filter(Boolean);

    // gpu_sidecar_jobs' counts, kept in Redis with every change, still match the records after
    // the kills and restarts (nothing counted twice, nothing missed).
    const expectedCounts: Record<string, number> = {};
    for (const s of submitted) {
      const k = `${s.experiment}\t${String(records.get(s.id)?.state)}`;
      expectedCounts[k] = (expectedCounts[k] ?? 0) + 1;
    }
    const hash = spawnSync('redis-cli', ['-p', String(redis.port), 'HGETALL', 'gsc:counts'], {
      encoding: 'utf8',
    }).stdout.split('\n');
    const keptCounts: Record<string, number> = {};
    for (let i = 0; i + 1 < hash.length; i += 2) {
      if (Number(hash[i + 1]) !== 0) keptCounts[hash[i]] = Number(hash[i + 1]);
    }

    const summary = {
      scale: SCALE.name,
      jobs: submitted.length,
      workerKills: counts['kill-worker'],
      redisRestarts: counts['restart-redis'],
      dockerdRestarts: counts['restart-dockerd'],
      succeeded,
      failed,
      failures,
      lost: notFinal.length,
      duplicated: duplicated.length,
      stuck: stuck.length,
      containersLeft: left.length,
      wallSeconds: Math.round((Date.now() - t0) / 1000),
    };
    note(`summary ${JSON.stringify(summary)}`);
    // The figures for docs/RELIABILITY.md, and the timeline if something went wrong.
    recordChaos('jobs-faults', { ...summary, timeline: eventsLog });

    expect(notFinal.map((s) => `${s.id} ${JSON.stringify(records.get(s.id))}`)).toEqual([]);
    expect(stuck).toEqual([]);
    expect(queueLeft).toEqual([]);
    expect(duplicated).toEqual([]);
    expect(inconsistent).toEqual([]);
    expect(unclear).toEqual([]);
    expect(diskMismatch).toEqual([]);
    expect(keptCounts).toEqual(expectedCounts);
    expect(left).toEqual([]);
    // The jobs meant to fail did, with their exit code; most of the others got through.
    for (const s of submitted.filter((x) => x.mode === 'fail')) {
      expect(records.get(s.id)).toMatchObject({ state: 'failed' });
    }
    expect(succeeded).toBeGreaterThan(submitted.length / 2);
    passed = true;
  });
});
