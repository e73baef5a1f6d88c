import {
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JobsClient } from '../../libs/jobs/src/testing/client';
import { runCli, type DaemonProcess } from '../support/daemon';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, waitUntil, workerEnvIn } from '../support/system';

jest.setTimeout(120_000);

/**
 * docs/EXPERIMENTS.md, "Adding and changing experiments while the worker runs", against the built
 * worker: files added, broken, fixed, doubled and removed under EXPERIMENTS_DIR while it runs,
 * picked up by the file watch, and by SIGHUP where the watch cannot see the change.
 */
describe('experiments: EXPERIMENTS_DIR followed without a restart', () => {
  let redis: TestRedis;
  let worker: DaemonProcess;
  let api: JobsClient;
  let dir: string;
  let experiments: string;
  /** Jobs of `added` wait for this file before they write their version. */
  let go: string;

  /** The experiment `added` at `version`, with `extra` lines. */
  const added = (version: string, extra = '') =>
    `name: added\nrunner: process\n` +
    `command: [sh, -c, 'while [ ! -e "$GO" ]; do sleep 0.05; done; echo ${version} > "$JOB_OUTPUT/version.txt"']\n` +
    `env: { GO: '${go}' }\n${extra}params: { type: object, properties: { n: { type: integer } } }\n`;

  /** Writes a file as editors do: a temporary file, renamed into place. */
  const put = (name: string, text: string) => {
    writeFileSync(path.join(experiments, `.${name}.tmp`), text);
    renameSync(path.join(experiments, `.${name}.tmp`), path.join(experiments, name));
  };

  const listed = async () =>
    (await api.call('GET', '/experiments')).body as { name: string; timeout: number | null }[];
  const installed = async (name: string) => (await listed()).find((e) => e.name === name);

  /** Waits for job `id` to succeed; returns the version it wrote. */
  async function versionOf(id: string): Promise<string> {
    const rec = await api.waitFor(id, ['succeeded', 'failed', 'cancelled']);
    expect(rec).toMatchObject({ state: 'succeeded' });
    const out = await fetch(`${api.base}/jobs/${id}/files/version.txt`);
    return (await out.text()).trim();
  }
  /** Runs a job of `name` to its end; returns the version it wrote. */
  const versionRun = async (name = 'added') => versionOf(await api.submit(name, { n: 1 }));

  /** A job of `added` running (held until `go` exists), and one queued behind it. */
  async function heldAndQueued(): Promise<[string, string]> {
    rmSync(go);
    const running = await api.submit('added', {});
    await api.waitFor(running, ['running']);
    const queued = await api.submit('added', {});
    return [running, queued];
  }

  /** The `experiments reloaded` log lines so far, parsed. */
  const reloads = () =>
    worker
      .stderr()
      .split('\n')
      .filter((l) => l.includes('"experiments reloaded"'))
      .map((l) => JSON.parse(l) as { trigger: string; changed: string[]; added: string[] });

  beforeAll(async () => {
    redis = await startRedis();
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-e2e-reload-'));
    experiments = path.join(dir, 'experiments');
    mkdirSync(experiments);
    go = path.join(dir, 'go');
    writeFileSync(go, '');
    const { env, api: port } = await workerEnvIn(dir, keygen(dir), {
      folders: { data: path.join(dir, 'data'), experiments },
      redisUrl: redis.url,
      extra: {
        // No Docker Engine: a docker experiment added later must show in readiness.
        DOCKER_HOST: `unix://${path.join(dir, 'no-docker.sock')}`,
        // One job at a time, so that a job can be held in the queue behind another.
        WORKER_CONCURRENCY: '1',
      },
    });
    api = new JobsClient(`http://127.0.0.1:${port}`);
    worker = runCli(['worker'], env);
    await worker.waitForLog('worker ready', 30_000);
  });

  afterAll(async () => {
    await worker?.stop();
    redis?.stop();
  });

  it('a file added is listed by GET /experiments within a couple of seconds, and runs jobs', async () => {
    expect(await listed()).toEqual([]);
    put('added.yaml', added('v1'));
    // The watch reads the folder once it has been quiet for 250 ms.
    await waitUntil('added listed', () => installed('added'), 5_000);
    expect(await versionRun()).toBe('v1');
    expect(worker.stderr()).toContain('"experiment":"added","trigger":"file change"');
  });

  it('a bad version: a warning naming the file and what is wrong, /health says so, the old version runs jobs', async () => {
    const file = path.join(experiments, 'added.yaml');
    // Written in place (truncate, then write), not renamed: the watch sees that too.
    writeFileSync(file, added('v2').replace('runner: process', 'runner: podman'));
    const problem = `experiment file ${file}: runner must be one of docker, process (the version loaded before stays in use)`;
    await worker.waitForLog(problem, 5_000);
    const health = await api.call('GET', '/health');
    expect(health.body).toMatchObject({ status: 'degraded', ready: true });
    expect(health.body.problems).toContain(`experiments: ${problem}`);
    expect((await api.call('GET', '/health/ready')).status).toBe(200);
    expect(await versionRun()).toBe('v1');
  });

  it('a fixed and changed version is used by every job that starts from then on, queued ones too', async () => {
    const [running, queued] = await heldAndQueued();
    put('added.yaml', added('v2', 'timeout: 7m\n'));
    await waitUntil(
      'v2 listed',
      async () => (await installed('added'))?.timeout === 420_000,
      5_000,
    );
    expect((await api.call('GET', '/health')).body.problems).toEqual([]);
    writeFileSync(go, '');
    // The running job keeps the version it started with; the queued one starts with the new one.
    expect(await versionOf(running)).toBe('v1');
    expect(await versionOf(queued)).toBe('v2');
    expect(await versionRun()).toBe('v2');
  });

  it('two files for one experiment are refused as at start; the version loaded before stays', async () => {
    put('added.yml', added('v3'));
    await worker.waitForLog(
      `experiment file ${experiments}/added.yml: name 'added' is not unique: ${experiments}/added.yaml is for it too (the version loaded before stays in use)`,
      5_000,
    );
    expect(await versionRun()).toBe('v2');
    unlinkSync(path.join(experiments, 'added.yml'));
    await waitUntil(
      'the clash gone from /health',
      async () => (await api.call('GET', '/health')).body.problems.length === 0,
      5_000,
    );
  });

  it('a removed file: new jobs get 404, a job already running goes on, a queued one fails saying why', async () => {
    const [running, queued] = await heldAndQueued();
    unlinkSync(path.join(experiments, 'added.yaml'));
    await waitUntil('added gone', async () => (await installed('added')) === undefined, 5_000);
    const refused = await api.call('POST', '/jobs', { experiment: 'added', params: {} });
    expect(refused.status).toBe(404);
    expect(refused.body.message).toMatch(/^experiment 'added' is not installed/);
    writeFileSync(go, '');
    expect(await api.waitFor(running, ['succeeded', 'failed'])).toMatchObject({
      state: 'succeeded',
    });
    const out = await fetch(`${api.base}/jobs/${running}/files/version.txt`);
    expect((await out.text()).trim()).toBe('v2');
    expect(await api.waitFor(queued, ['succeeded', 'failed'])).toMatchObject({
      state: 'failed',
      error: expect.stringMatching(
        /^experiment 'added' is not installed on .* \(no file in its EXPERIMENTS_DIR defines it now\)$/,
      ),
    });
  });

  it('SIGHUP reads the folder at once, also a change the watch cannot see (a linked file edited elsewhere)', async () => {
    const elsewhere = path.join(dir, 'elsewhere');
    mkdirSync(elsewhere);
    const target = path.join(elsewhere, 'linked.yaml');
    const linked = (version: string, extra: string) =>
      added(version, extra).replace('name: added', 'name: linked');
    writeFileSync(target, linked('v1', 'timeout: 8m\n'));
    symlinkSync(target, path.join(experiments, 'linked.yaml'));
    await waitUntil('linked listed', () => installed('linked'), 5_000);
    // The target's folder is not watched: only SIGHUP reads this change.
    writeFileSync(target, linked('v2', 'timeout: 9m\n'));
    const before = reloads().length;
    worker.child.kill('SIGHUP');
    await waitUntil('a reload by SIGHUP', () => reloads().length > before, 5_000);
    expect(reloads().slice(before)[0]).toMatchObject({ trigger: 'SIGHUP', changed: ['linked'] });
    expect((await installed('linked'))?.timeout).toBe(540_000);
    expect(await versionRun('linked')).toBe('v2');
  });

  it('a docker experiment added at run time shows in readiness; a GPU one is refused as at start', async () => {
    put(
      'dock.yaml',
      'name: dock\nrunner: docker\nimage: gpu-sidecar-test:latest\ncommand: ["true"]\nparams: { type: object }\n',
    );
    await waitUntil(
      'the docker line in /health',
      async () =>
        ((await api.call('GET', '/health')).body.problems as string[]).find((p) =>
          p.endsWith('docker experiments (dock) wait until it answers; the others run'),
        ),
      10_000,
    );
    put('gpu.yaml', 'name: gpu\nrunner: process\ncommand: ["true"]\ngpus: 1\nparams: {}\n');
    const why = "experiment 'gpu' needs 1 GPU(s) and this worker has none (GPU_DEVICES)";
    await worker.waitForLog(`${why}: its submissions to this worker get 400`, 5_000);
    const refused = await api.call('POST', '/jobs', { experiment: 'gpu', params: {} });
    expect(refused).toMatchObject({ status: 400, body: { message: why } });
  });
});
