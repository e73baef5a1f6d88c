import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ContainerCreateOptions } from 'dockerode';
import { loadWorkerConfig, silentLogger } from '../../libs/config/src';
import { JOB_LABELS } from '../../libs/docker/src';
import {
  DockerEngine,
  DockerRunner,
  ResultsStore,
  loadExperiments,
  parseExperiment,
  type ContainerEngine,
  type GpuInventory,
  type JobRecord,
  type RunOutcome,
} from '../../libs/jobs/src';
import { exitMark } from '../../libs/jobs/src/runner/runner';
import { startRedis, type TestRedis } from '../support/redis';
import { TEST_IMAGE, testDockerHost } from '../support/docker';
import { startJobs } from '../../libs/jobs/src/testing/start-jobs';

jest.setTimeout(90_000);

const JOB_UID = { uid: 1234, gid: 1235 };
const host = testDockerHost();
if (host.includes('/var/run/docker.sock')) throw new Error('refusing the shared Docker Engine');
const tag = randomBytes(4).toString('hex');
const WORKER = `docker-it-${tag}`;
const engine = new DockerEngine(host);
const runner = new DockerRunner({
  engine,
  host,
  workerName: WORKER,
  killGraceMs: 500,
  log: silentLogger(),
});
const store = new ResultsStore(mkdtempSync(path.join(tmpdir(), 'gsc-docker-it-')));

/** An experiment file's text for the busybox test image running `script` with sh. */
function experiment(script: string, extra = '') {
  return parseExperiment(
    '/x/dock.yaml',
    `name: dock\nrunner: docker\nimage: ${TEST_IMAGE}\n` +
      `command: ["sh", "-c", ${JSON.stringify(script)}]\nparams: { type: object }\n${extra}`,
  );
}

/** Runs one job through the runner as the worker would; returns the outcome, its paths and log. */
async function runJob(
  script: string,
  extra = '',
  opts: {
    signal?: AbortSignal;
    gpus?: string[];
    runner?: DockerRunner;
    onProgress?: () => void;
  } = {},
) {
  const id = randomUUID();
  const rec = baseRecord(id);
  const paths = await store.create(rec, { n: 1 });
  const progress: number[] = [];
  const t0 = Date.now();
  const outcome: RunOutcome = await (opts.runner ?? runner).run({
    jobId: id,
    experiment: experiment(script, extra),
    paths,
    gpus: opts.gpus ?? [],
    user: JOB_UID,
    signal: opts.signal ?? new AbortController().signal,
    onProgress: (p) => {
      progress.push(p.percent);
      opts.onProgress?.();
    },
  });
  return {
    id,
    outcome,
    paths,
    progress,
    ms: Date.now() - t0,
    log: existsSync(paths.log) ? readFileSync(paths.log, 'utf8') : '',
  };
}

const leftovers = async (worker = WORKER) => engine.listByLabel(JOB_LABELS.worker, worker);

afterAll(async () => {
  for (const c of [...(await leftovers()), ...(await leftovers(`other-${tag}`))]) {
    await engine.remove(c.id);
  }
});

describe('Docker runner against the real Docker Engine', () => {
  it('runs the job as JOB_UID with /job mounted, logs both streams, parses progress and removes the container', async () => {
    const r = await runJob(
      'echo "::progress:: 40 half"; echo oops >&2; id -u > /job/output/uid.txt; ' +
        'cat /job/params.json > /job/output/params.txt; echo "$JOB_ID" > /job/output/id.txt; ' +
        'echo "::progress:: 100"',
    );
    expect(r.outcome).toMatchObject({ kind: 'exited', exitCode: 0 });
    const file = path.join(r.paths.output, 'uid.txt');
    expect(statSync(file)).toMatchObject({ uid: JOB_UID.uid, gid: JOB_UID.gid });
    expect(readFileSync(file, 'utf8').trim()).toBe(String(JOB_UID.uid));
    expect(JSON.parse(readFileSync(path.join(r.paths.output, 'params.txt'), 'utf8'))).toEqual({
      n: 1,
    });
    expect(readFileSync(path.join(r.paths.output, 'id.txt'), 'utf8').trim()).toBe(r.id);
    expect(r.log).toContain('::progress:: 40 half');
    expect(r.log).toContain('oops');
    expect(r.progress).toEqual([40, 100]);
    expect(await leftovers()).toEqual([]);
  });

  it('runs the Docker example of examples/experiments as shipped', async () => {
    const exp = loadExperiments(path.join(__dirname, '..', '..', 'examples', 'experiments')).get(
      'hello-docker',
    )!;
    const id = randomUUID();
    const paths = await store.create(baseRecord(id), { name: 'Ada' });
    const progress: number[] = [];
    const out = await runner.run({
      jobId: id,
      experiment: exp,
      paths,
      gpus: [],
      user: JOB_UID,
      signal: new AbortController().signal,
      onProgress: (p) => progress.push(p.percent),
    });
    expect(out).toMatchObject({ kind: 'exited', exitCode: 0 });
    expect(progress).toEqual([33, 66, 99]);
    expect(readFileSync(path.join(paths.output, 'hello.txt'), 'utf8')).toMatch(
      /^Hello from a container, as 1234, to \{[\s\S]*"name": "Ada"/,
    );
  });

  it('gives the job no network: only the loopback interface exists', async () => {
    const r = await runJob('cat /proc/net/dev');
    expect(r.outcome).toMatchObject({ kind: 'exited', exitCode: 0 });
    const ifaces = r.log
      .split('\n')
      .filter((l) => l.includes(':'))
      .map((l) => l.split(':')[0].trim());
    expect(ifaces).toEqual(['lo']);
  });

  it('holds the job to no privileges, a read-only job folder and only output/ writable', async () => {
    const r = await runJob(
      'grep -E "^(CapEff|NoNewPrivs)" /proc/self/status; ' +
        'if echo forged > /job/job.json; then echo WROTE-RECORD; fi; ' +
        'if echo x > /job/logs/output.log; then echo WROTE-LOG; fi; ' +
        'if touch /job/input/x; then echo WROTE-INPUT; fi; touch /job/output/ok',
    );
    expect(r.outcome).toMatchObject({ kind: 'exited', exitCode: 0 });
    expect(r.log).toMatch(/CapEff:\s+0000000000000000/);
    expect(r.log).toMatch(/NoNewPrivs:\s+1/);
    expect(r.log).not.toMatch(/WROTE-/);
    expect(JSON.parse(readFileSync(path.join(r.paths.dir, 'job.json'), 'utf8')).id).toBe(r.id);
    expect(statSync(path.join(r.paths.output, 'ok')).uid).toBe(JOB_UID.uid);
  });

  it('records a non-zero exit code', async () => {
    const r = await runJob('exit 3');
    expect(r.outcome).toMatchObject({ kind: 'exited', exitCode: 3 });
    expect(await leftovers()).toEqual([]);
  });

  it('leaves the exit mark of a try that exited 0 before its container is removed, and none of one that failed', async () => {
    // What a worker SIGKILLed right after the removal leaves: the mark alone says the try
    // succeeded (the next worker records it instead of running the job again).
    const seenAtRemoval: boolean[] = [];
    let marks: string[] = [];
    class WatchRemove extends DockerEngine {
      override async remove(id: string): Promise<void> {
        seenAtRemoval.push(...marks.map((m) => existsSync(m)));
        return super.remove(id);
      }
    }
    const watching = new DockerRunner({
      engine: new WatchRemove(host),
      host,
      workerName: WORKER,
      killGraceMs: 500,
      log: silentLogger(),
    });
    const ids: string[] = [];
    for (const script of ['echo done', 'exit 3']) {
      const id = randomUUID();
      const paths = await store.create(baseRecord(id), {});
      marks = [exitMark(paths)];
      ids.push(id);
      const outcome = await watching.run({
        jobId: id,
        experiment: experiment(script),
        paths,
        gpus: [],
        user: JOB_UID,
        signal: new AbortController().signal,
        onProgress: () => undefined,
      });
      expect(outcome).toMatchObject({ kind: 'exited', exitCode: script === 'exit 3' ? 3 : 0 });
    }
    expect(seenAtRemoval).toEqual([true, false]);
    expect(await store.exitedOk('dock', ids[0])).toBe(true);
    expect(await store.exitedOk('dock', ids[1])).toBe(false);
  });

  it("kills a job that outlives the experiment's timeout (SIGTERM ignored, SIGKILL after the grace)", async () => {
    const r = await runJob('echo started; sleep 60', 'timeout: 500ms\n');
    expect(r.outcome).toMatchObject({ kind: 'timeout', exitCode: 137 });
    expect(r.ms).toBeLessThan(30_000);
    expect(r.log).toContain('started');
    expect(await leftovers()).toEqual([]);
  });

  it('stops a cancelled job and removes its container', async () => {
    const ac = new AbortController();
    const r = await runJob('echo "::progress:: 1 up"; sleep 60', '', {
      signal: ac.signal,
      onProgress: () => ac.abort('cancelled'),
    });
    expect(r.outcome).toMatchObject({ kind: 'aborted', reason: 'cancelled', exitCode: 137 });
    expect(r.ms).toBeLessThan(30_000);
    expect(await leftovers()).toEqual([]);
  });

  it('reports a job killed at its memory limit as "out of memory"', async () => {
    // tail -c keeps the last 100 MB in memory: far past the 16 MiB limit (swap included).
    // Docker's OOMKilled covers any process of the container; the job fails when its exit says so.
    const r = await runJob(
      'head -c 100000000 /dev/zero | tail -c 100000000 > /dev/null || exit $?; echo survived',
      'memory: 16m\n',
    );
    expect(r.outcome).toMatchObject({ kind: 'error', message: 'out of memory', exitCode: 137 });
    expect(r.log).not.toContain('survived');
    expect(await leftovers()).toEqual([]);
  });

  it('fails clearly when the image is not on this host', async () => {
    const missing = await (async () => {
      const id = randomUUID();
      const paths = await store.create(baseRecord(id), {});
      return runner.run({
        jobId: id,
        experiment: { ...experiment('true'), image: `gsc-missing-${tag}:latest` },
        paths,
        gpus: [],
        user: JOB_UID,
        signal: new AbortController().signal,
        onProgress: () => undefined,
      });
    })();
    expect(missing).toEqual({
      kind: 'error',
      message: `image gsc-missing-${tag}:latest not found on this host; docker.sh pull or docker load it`,
    });
  });

  it('says Docker is unreachable, with the address, when it is', async () => {
    const gone = new DockerRunner({
      engine: new DockerEngine('unix:///nonexistent/docker.sock'),
      host: 'unix:///nonexistent/docker.sock',
      workerName: WORKER,
      killGraceMs: 500,
      log: silentLogger(),
    });
    expect(await gone.status()).toMatchObject({
      reachable: false,
      reason: expect.stringMatching(
        /^Docker Engine at unix:\/\/\/nonexistent\/docker.sock is unreachable/,
      ),
    });
    expect(await gone.unavailable()).toMatch(/unreachable/);
    // Unreachable when the container is created: the try is given back (the job waits).
    const r = await runJob('true', '', { runner: gone });
    expect(r.outcome).toMatchObject({
      kind: 'unavailable',
      reason: expect.stringMatching(/unreachable/),
    });
    gone.close();
    expect(await runner.status()).toMatchObject({ reachable: true, nvidiaRuntime: false });
  });

  it("removes this worker's leftover containers at reconciliation, never another worker's", async () => {
    const make = (worker: string) =>
      engine.create({
        Image: TEST_IMAGE,
        Cmd: ['sleep', '60'],
        Labels: { [JOB_LABELS.worker]: worker, [JOB_LABELS.job]: randomUUID() },
        HostConfig: { NetworkMode: 'none' },
      });
    const mine = await make(WORKER);
    const other = await make(`other-${tag}`);
    // A worker name that is a prefix of ours must not match either.
    const prefix = await make(WORKER.slice(0, -1));
    await Promise.all([mine, other, prefix].map((id) => engine.start(id)));
    expect(await runner.reconcile()).toBe(1);
    expect(await engine.inspectEnd(mine)).toBeUndefined();
    expect(await engine.inspectEnd(other)).toBeDefined();
    expect(await engine.inspectEnd(prefix)).toBeDefined();
    await engine.remove(other);
    await engine.remove(prefix);
  });

  it('records a leftover job that exits 0 on its own while reconciliation looks, and not one it stops', async () => {
    const leftover = async (script: string) => {
      const job = randomUUID();
      const id = await engine.create({
        Image: TEST_IMAGE,
        Cmd: ['sh', '-c', script],
        Labels: {
          [JOB_LABELS.worker]: WORKER,
          [JOB_LABELS.job]: job,
          [JOB_LABELS.experiment]: 'dock',
        },
        HostConfig: { NetworkMode: 'none' },
      });
      await engine.start(id);
      return { id, job };
    };
    const ending = await leftover('sleep 1; exit 0');
    const stuck = await leftover('sleep 60');
    // Docker reports ExitCode 0 for a running container: `ended` tells them apart.
    expect(await engine.inspectEnd(stuck.id)).toMatchObject({ exitCode: 0, ended: false });
    // The listing sees both running; the reconciliation goes on only once `ending` has exited
    // by itself, as when it ends between the listing and its removal.
    let listedState: string | undefined;
    class ListThenWait extends DockerEngine {
      override async listByLabel(key: string, value: string) {
        const list = await super.listByLabel(key, value);
        listedState = list.find((c) => c.id === ending.id)?.state;
        await engine.wait(ending.id);
        return list;
      }
    }
    const finished: string[] = [];
    const looking = new DockerRunner({
      engine: new ListThenWait(host),
      host,
      workerName: WORKER,
      killGraceMs: 500,
      log: silentLogger(),
      onExitedOk: async (job) => void finished.push(job),
    });
    expect(await looking.reconcile()).toBe(2);
    expect(listedState).toBe('running');
    expect(finished).toEqual([ending.job]);
    expect(await engine.inspectEnd(ending.id)).toBeUndefined();
    expect(await engine.inspectEnd(stuck.id)).toBeUndefined();
  });

  it('says a container that never started has not ended, though Docker gives it exit code 0', async () => {
    const id = await engine.create({
      Image: TEST_IMAGE,
      Cmd: ['true'],
      Labels: { [JOB_LABELS.worker]: WORKER },
      HostConfig: { NetworkMode: 'none' },
    });
    expect(await engine.inspectEnd(id)).toMatchObject({ exitCode: 0, ended: false });
    await engine.start(id);
    await engine.wait(id);
    expect(await engine.inspectEnd(id)).toMatchObject({ exitCode: 0, ended: true });
    await engine.remove(id);
  });

  it('replaces a leftover container of the same job instead of running a second one', async () => {
    const id = randomUUID();
    const stale = await engine.create({
      name: `gsc-job-${id}`,
      Image: TEST_IMAGE,
      Cmd: ['sleep', '60'],
      Labels: { [JOB_LABELS.worker]: WORKER, [JOB_LABELS.job]: id },
      HostConfig: { NetworkMode: 'none' },
    });
    await engine.start(stale);
    const paths = await store.create(baseRecord(id), {});
    const out = await runner.run({
      jobId: id,
      experiment: experiment('echo fresh'),
      paths,
      gpus: [],
      user: JOB_UID,
      signal: new AbortController().signal,
      onProgress: () => undefined,
    });
    expect(out).toMatchObject({ kind: 'exited', exitCode: 0 });
    expect(readFileSync(paths.log, 'utf8')).toContain('fresh');
    expect(await engine.inspectEnd(stale)).toBeUndefined();
  });
});

function baseRecord(id: string): JobRecord {
  return {
    id,
    experiment: 'dock',
    state: 'running',
    progress: 0,
    worker: WORKER,
    gpu: null,
    attempts: 1,
    createdAt: new Date().toISOString(),
    startedAt: null,
    finishedAt: null,
    exitCode: null,
    error: null,
  };
}

describe('JobsRuntime with Docker jobs', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  /** A runtime with a docker GPU experiment, a docker CPU one and a process one. */
  async function runtime(env: Record<string, string>, opts: Parameters<typeof startJobs>[2]) {
    const data = mkdtempSync(path.join(tmpdir(), 'gsc-docker-rt-'));
    const exp = mkdtempSync(path.join(tmpdir(), 'gsc-docker-rt-exp-'));
    writeFileSync(
      path.join(exp, 'gpu-dock.yaml'),
      `name: gpu-dock\nrunner: docker\nimage: ${TEST_IMAGE}\ncommand: ["sh", "-c", "nvidia-smi"]\ngpus: 1\nparams: { type: object }\n`,
    );
    writeFileSync(
      path.join(exp, 'cpu-dock.yaml'),
      `name: cpu-dock\nrunner: docker\nimage: ${TEST_IMAGE}\ncommand: ["true"]\nparams: { type: object }\n`,
    );
    writeFileSync(
      path.join(exp, 'plain.yaml'),
      `name: plain\nrunner: process\ncommand: ["true"]\nparams: { type: object }\n`,
    );
    const config = loadWorkerConfig({
      TUNNEL_KEY_FILE: '/unused',
      REDIS_URL: redis.url,
      DATA_FOLDER: data,
      EXPERIMENTS_DIR: exp,
      WORKER_NAME: `rt-${tag}`,
      DOCKER_HOST: host,
      ...env,
    });
    return startJobs(config, silentLogger(), { killGraceMs: 500, ...opts });
  }

  it('gives a GPU job its detected GPU through DeviceRequests and fails clearly without NVIDIA runtime', async () => {
    const uuid = `GPU-${randomUUID()}`;
    const sick = `GPU-${randomUUID()}`;
    const inventory: GpuInventory = {
      detect: async () => [
        { index: 0, uuid: sick },
        { index: 1, uuid },
      ],
      isHealthy: (u) => u !== sick,
    };
    const created: ContainerCreateOptions[] = [];
    const started: { HostConfig: unknown; Env: string[] }[] = [];
    const real = new DockerEngine(host);
    // The real engine, with a look at each container just before it starts (it is removed after).
    const watching: ContainerEngine = Object.assign(Object.create(real) as DockerEngine, {
      create: async (o: ContainerCreateOptions) => {
        created.push(o);
        return real.create(o);
      },
      start: async (id: string) => {
        const { default: Docker } = await import('dockerode');
        const i = await new Docker({ socketPath: new URL(host).pathname })
          .getContainer(id)
          .inspect();
        started.push({ HostConfig: i.HostConfig, Env: i.Config.Env });
        return real.start(id);
      },
    });
    const rt = await runtime(
      { GPU_DEVICES: 'all' },
      { gpuInventory: inventory, dockerEngine: watching },
    );
    try {
      expect(rt.gpus.devices).toEqual([sick, uuid]);
      const { record } = await rt.service.submit({ experiment: 'gpu-dock' });
      const end = await rt.service.waitForEnd(record.id, 60_000);
      expect(end).toMatchObject({ state: 'failed', gpu: uuid });
      expect(end.error).toMatch(/install nvidia-container-toolkit/);
      expect(started).toHaveLength(1);
      expect(started[0].HostConfig).toMatchObject({
        DeviceRequests: [{ Driver: 'nvidia', DeviceIDs: [uuid], Capabilities: [['gpu']] }],
        NetworkMode: 'none',
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
      });
      expect(started[0].Env).toEqual(
        expect.arrayContaining([`CUDA_VISIBLE_DEVICES=${uuid}`, `NVIDIA_VISIBLE_DEVICES=${uuid}`]),
      );
      expect(created[0].Labels).toEqual({
        [JOB_LABELS.worker]: `rt-${tag}`,
        [JOB_LABELS.job]: record.id,
        [JOB_LABELS.experiment]: 'gpu-dock',
      });
      expect(rt.gpus.inUse()).toEqual({ [sick]: 0, [uuid]: 0 });
      expect(await engine.listByLabel(JOB_LABELS.worker, `rt-${tag}`)).toEqual([]);
    } finally {
      await rt.close();
    }
  });

  it('keeps Docker jobs queued while Docker is unreachable; process jobs still run', async () => {
    const rt = await runtime(
      { GPU_DEVICES: 'none', DOCKER_HOST: 'unix:///nonexistent/docker.sock' },
      {},
    );
    try {
      expect(await rt.dockerStatus()).toMatchObject({
        reachable: false,
        required: true,
        reason: expect.stringMatching(/unix:\/\/\/nonexistent\/docker.sock is unreachable/),
      });
      const docker = await rt.service.submit({ experiment: 'cpu-dock' });
      const plain = await rt.service.submit({ experiment: 'plain' });
      expect(await rt.service.waitForEnd(plain.record.id, 30_000)).toMatchObject({
        state: 'succeeded',
      });
      await new Promise((r) => setTimeout(r, 3_000));
      expect(await rt.service.get(docker.record.id)).toMatchObject({
        state: 'queued',
        attempts: 0,
      });
      expect((await rt.service.cancel(docker.record.id)).state).toBe('cancelled');
    } finally {
      await rt.close();
    }
  });
});
