/* eslint-disable @typescript-eslint/no-explicit-any -- the API answers JSON of any shape */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JobsClient } from '../../libs/jobs/src/testing/client';
import { exitCode, runCli, type DaemonProcess } from '../support/daemon';
import { TEST_IMAGE, testDockerHost } from '../support/docker';
import { inspectingDockerProxy } from '../support/docker-proxy';
import { startRedis, type TestRedis } from '../support/redis';
import { GPU0, mig, MIG_SMI_DIR as MIG, NEW_3G, pointCapture } from '../support/mig';
import { keygen, metricValue, waitUntil, workerEnvIn } from '../support/system';

jest.setTimeout(180_000);

/**
 * The built worker on a MIG host: the fake nvidia-smi replays real captures of partitioned
 * H100 and H200 GPUs (test/fixtures/nvidia-smi/mig), Docker is the real engine behind a proxy
 * that inspects each container just before it starts. What a job asking for a MIG profile is
 * given, what /health, /metrics and `status` show, and a re-partition under a running job.
 */
const MIB = 1024 * 1024;

const experiments: Record<string, string> = {
  'mig-dock': `name: mig-dock\nrunner: docker\nimage: ${TEST_IMAGE}\ncommand: ["true"]\nmig_profile: 2g.20gb\nparams: { type: object }\n`,
  'mig-proc': `name: mig-proc\nrunner: process\ncommand: ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES > $JOB_OUTPUT/gpu.txt"]\ngpu_memory: 9GB\nparams: { type: object }\n`,
  'too-big': `name: too-big\nrunner: process\ncommand: ["true"]\nmig_profile: 7g.80gb\nparams: { type: object }\n`,
  small: `name: small\nrunner: process\ncommand: ["sh", "-c", "sleep 60"]\nmig_profile: 1g.18gb\nparams: { type: object }\n`,
  whole: `name: whole\nrunner: process\ncommand: ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES > $JOB_OUTPUT/gpu.txt"]\nmig_profile: 3g.71gb\nparams: { type: object }\n`,
};

let redis: TestRedis;
let dir: string;
beforeAll(async () => {
  redis = await startRedis();
  dir = mkdtempSync(path.join(tmpdir(), 'gsc-mig-e2e-'));
});
afterAll(() => {
  redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** The built worker with nvidia-smi replaying `layout` (re-pointable) and Docker at `dockerHost`. */
async function startWorker(layout: string, name: string, dockerHost: string) {
  const root = mkdtempSync(path.join(dir, `${name}-`));
  const link = path.join(root, 'layout');
  pointCapture(link, layout);
  const folders = { data: path.join(root, 'data'), experiments: path.join(root, 'experiments') };
  mkdirSync(folders.experiments);
  for (const [n, text] of Object.entries(experiments))
    writeFileSync(path.join(folders.experiments, `${n}.yaml`), text);
  const keyFile = keygen(root);
  const { env, api } = await workerEnvIn(root, keyFile, {
    folders,
    name,
    redisUrl: redis.url,
    extra: {
      PATH: `${MIG}:${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`,
      NVIDIA_SMI_FIXTURE: link,
      GPU_DEVICES: 'all',
      GPU_SAMPLE_INTERVAL: '200ms',
      DOCKER_HOST: dockerHost,
    },
  });
  const worker = runCli(['worker'], env, root);
  await worker.waitForLog('worker ready');
  return {
    worker,
    env,
    url: `http://127.0.0.1:${api}`,
    jobs: new JobsClient(`http://127.0.0.1:${api}`),
    output: (experiment: string, id: string) =>
      readFileSync(
        path.join(folders.data, 'jobs', experiment, id, 'output', 'gpu.txt'),
        'utf8',
      ).trim(),
    /** An admin re-partitions: nvidia-smi lists another capture from its next call. */
    repartition: (next: string) => pointCapture(link, next),
  };
}

async function stop(w: { worker: DaemonProcess } | undefined) {
  await w?.worker.stop();
}

describe('a worker on an H100 partitioned 3g.40gb, 2g.20gb, 1g.10gb, 1g.10gb', () => {
  let proxy: Awaited<ReturnType<typeof inspectingDockerProxy>>;
  let w: Awaited<ReturnType<typeof startWorker>>;

  beforeAll(async () => {
    proxy = await inspectingDockerProxy(testDockerHost(), dir);
    w = await startWorker('h100', 'mig-h100', proxy.host);
  });
  afterAll(async () => {
    await stop(w);
    await proxy?.close();
  });

  it('creates the Docker job asking mig_profile 2g.20gb with exactly that instance in its device request', async () => {
    const id = await w.jobs.submit('mig-dock');
    const end = await w.jobs.waitFor(id, ['succeeded', 'failed'], 60_000);
    // No NVIDIA runtime here: the engine refuses to start it, after creating it as asked.
    expect(end.state).toBe('failed');
    expect(end.error).toMatch(/install nvidia-container-toolkit/);
    expect(end.gpu).toBe(`${mig(1)} (${GPU0})`);
    const mine = proxy.started.filter((c) => c.Labels['gpu-sidecar.job'] === id);
    expect(mine).toHaveLength(1);
    expect(mine[0].HostConfig.DeviceRequests).toEqual([
      expect.objectContaining({ Driver: 'nvidia', DeviceIDs: [mig(1)], Capabilities: [['gpu']] }),
    ]);
    expect(mine[0].Env).toEqual(
      expect.arrayContaining([
        `NVIDIA_VISIBLE_DEVICES=${mig(1)}`,
        `CUDA_VISIBLE_DEVICES=${mig(1)}`,
      ]),
    );
  });

  it('gives a process job asking gpu_memory 9GB the smallest instance that fits, by CUDA_VISIBLE_DEVICES', async () => {
    const id = await w.jobs.submit('mig-proc');
    const end = await w.jobs.waitFor(id, ['succeeded', 'failed']);
    expect(end.state).toBe('succeeded');
    const got = w.output('mig-proc', id);
    expect([mig(2), mig(3)]).toContain(got);
    expect(end.gpu).toBe(`${got} (${GPU0})`);
  });

  it('refuses at submit, with 400 naming every instance, a profile this host does not have', async () => {
    const r = await w.jobs.call('POST', '/jobs', { experiment: 'too-big', params: {} });
    expect(r.status).toBe(400);
    expect(r.body.message).toBe(
      "experiment 'too-big' needs 1 GPU(s) with mig_profile 7g.80gb: no 1 device(s) on this " +
        `worker match; it has: ${mig(0)} (3g.40gb, 40448 MiB, GPU 0), ${mig(1)} (2g.20gb, ` +
        `20096 MiB, GPU 0), ${mig(2)} (1g.10gb, 9984 MiB, GPU 0), ${mig(3)} (1g.10gb, 9984 MiB, ` +
        'GPU 0) (mig-h100)',
    );
  });

  it('shows the instances under their GPU in /health, /metrics and status', async () => {
    const health = (await w.jobs.call('GET', '/health')).body;
    const [gpu] = health.gpus.devices;
    expect(gpu).toMatchObject({ index: 0, uuid: GPU0, migEnabled: true, temperatureC: 42 });
    expect(gpu.mig.map((i: any) => [i.uuid, i.profile, i.gpuInstanceId, i.healthy])).toEqual([
      [mig(0), '3g.40gb', 2, true],
      [mig(1), '2g.20gb', 3, true],
      [mig(2), '1g.10gb', 9, true],
      [mig(3), '1g.10gb', 10, true],
    ]);
    expect(gpu.mig[1].memoryTotalBytes).toBe(20096 * MIB);
    const metrics = await (await fetch(`${w.url}/metrics`)).text();
    const labels = { gpu: '0', UUID: GPU0, GPU_I_PROFILE: '2g.20gb', GPU_I_ID: '3' };
    expect(metricValue(metrics, 'DCGM_FI_DEV_FB_USED', labels)).toBe(17);
    expect(metricValue(metrics, 'DCGM_FI_DEV_FB_FREE', labels)).toBe(20080);
    expect(metricValue(metrics, 'gpu_healthy', { uuid: mig(0), GPU_I_ID: '2' })).toBe(1);
    const status = runCli(['status', '--url', w.url], { NO_COLOR: '1' });
    expect(await exitCode(status)).toBe(0);
    const out = status.stdout();
    expect(out).toContain(`└ MIG 3g.40gb ${mig(0)}`);
    expect(out).toContain(`└ MIG 1g.10gb ${mig(3)}`);
    expect(out.indexOf('NVIDIA H100 80GB HBM3')).toBeLessThan(out.indexOf(`└ MIG 3g.40gb`));
  });
});

describe('an admin re-partitions the H200 while a job runs on one of its instances', () => {
  let w: Awaited<ReturnType<typeof startWorker>>;

  afterAll(() => stop(w));

  it('fails that job with the reason, marks the instances missing, and runs new ones without a restart', async () => {
    w = await startWorker('h200', 'mig-h200', testDockerHost());
    const before = await w.jobs.call('POST', '/jobs', { experiment: 'whole', params: {} });
    expect(before.status).toBe(400);
    const id = await w.jobs.submit('small');
    const running = await w.jobs.waitFor(id, ['running']);
    const on = String(running.gpu).split(' ')[0];
    expect([mig(3), mig(4)]).toContain(on);

    w.repartition('h200-580');
    const end = await w.jobs.waitFor(id, ['failed', 'succeeded', 'cancelled'], 20_000);
    expect(end.state).toBe('failed');
    expect(end.error).toBe(
      `MIG instance ${on} (1g.18gb on GPU 0 ${GPU0}) vanished while the job ran: its GPU was ` +
        're-partitioned',
    );
    const health = (await w.jobs.call('GET', '/health')).body;
    expect(health.gpus.devices[0].mig.map((i: any) => [i.uuid, i.profile])).toEqual([
      [NEW_3G, '3g.71gb'],
    ]);
    expect(health.gpus.vanished.map((v: any) => v.uuid)).toEqual([0, 1, 2, 3, 4].map(mig));
    expect(w.worker.stdout() + w.worker.stderr()).toContain('MIG instance vanished');

    const next = await w.jobs.submit('whole');
    const done = await w.jobs.waitFor(next, ['succeeded', 'failed']);
    expect(done).toMatchObject({ state: 'succeeded', gpu: `${NEW_3G} (${GPU0})` });
    expect(w.output('whole', next)).toBe(NEW_3G);
    const gone = await w.jobs.call('POST', '/jobs', { experiment: 'small', params: {} });
    expect(gone.status).toBe(400);
    await waitUntil(
      'the worker still answering',
      async () => (await fetch(`${w.url}/health/live`)).ok,
    );
  });
});
