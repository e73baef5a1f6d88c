/* eslint-disable @typescript-eslint/no-explicit-any -- the API answers JSON of any shape */
import { randomBytes } from 'node:crypto';
import Docker from 'dockerode';
import { TEST_IMAGE, testDockerHost } from '../support/docker';
import { metricValue, startPair, type Pair } from '../support/system';

jest.setTimeout(180_000);

/**
 * The built worker against the real Docker Engine: a container labelled as this worker's job
 * container, and a HEALTH_CONTAINERS service container, each stopped from outside, show in
 * /health and /metrics within one GPU_SAMPLE_INTERVAL.
 */
const INTERVAL_MS = 5_000; // GPU_SAMPLE_INTERVAL's default

describe('worker /health and /metrics see containers stopped from outside', () => {
  const host = testDockerHost();
  if (host.includes('/var/run/docker.sock')) throw new Error('refusing the shared Docker Engine');
  const docker = new Docker({ socketPath: new URL(host).pathname });
  const tag = randomBytes(4).toString('hex');
  const workerName = `health-e2e-${tag}`;
  const jobName = `gsc-job-${tag}`;
  const serviceName = `gsc-svc-${tag}`;
  const created: Docker.Container[] = [];
  let pair: Pair;
  let api: string;

  async function run(name: string, labels: Record<string, string>): Promise<Docker.Container> {
    const c = await docker.createContainer({
      name,
      Image: TEST_IMAGE,
      Cmd: ['sleep', '300'],
      Labels: labels,
      HostConfig: { NetworkMode: 'none' },
    });
    created.push(c);
    await c.start();
    return c;
  }

  const health = async () => (await (await fetch(`${api}/health`)).json()) as any;
  const metrics = async () => (await fetch(`${api}/metrics`)).text();
  const container = (h: any, name: string) =>
    (h.containers.containers as any[]).find((c) => c.name === name);

  /** Polls until `check` holds; returns how long it took. */
  async function within(what: string, ms: number, check: () => Promise<boolean>) {
    const started = Date.now();
    while (!(await check())) {
      if (Date.now() - started > ms) throw new Error(`${what}: not seen within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return Date.now() - started;
  }

  beforeAll(async () => {
    await run(serviceName, {});
    pair = await startPair({
      worker: {
        DOCKER_HOST: host,
        WORKER_NAME: workerName,
        HEALTH_CONTAINERS: serviceName,
        GPU_SAMPLE_INTERVAL: `${INTERVAL_MS}ms`,
      },
    });
    api = `http://127.0.0.1:${pair.ports.api}`;
  });

  afterAll(async () => {
    await pair?.stop();
    await Promise.all(created.map((c) => c.remove({ force: true }).catch(() => undefined)));
  });

  it('reports Docker reachable and the running service container', async () => {
    const h = await health();
    expect(h.docker).toMatchObject({ reachable: true, required: false, nvidiaRuntime: false });
    expect(h.containers.ok).toBe(true);
    expect(container(h, serviceName)).toMatchObject({
      kind: 'service',
      status: 'running',
      running: true,
    });
    expect(h.status).toBe('ok');
    expect(metricValue(await metrics(), 'container_probe_up')).toBe(1);
  });

  it('a job container started and then stopped from outside shows within one interval', async () => {
    const c = await run(jobName, { 'gpu-sidecar.worker': workerName, 'gpu-sidecar.job': 'x' });
    const seenRunning = await within('job container running', INTERVAL_MS, async () => {
      const s = container(await health(), jobName);
      return s?.running === true && s.kind === 'job';
    });
    // CPU and memory (cAdvisor names) for a running job container, after the stats call.
    await within('container memory', 2 * INTERVAL_MS, async () => {
      const v = metricValue(await metrics(), 'container_memory_usage_bytes', { name: jobName });
      return v !== undefined && v > 0;
    });
    expect(metricValue(await metrics(), 'container_up', { name: jobName })).toBe(1);

    await c.stop({ t: 1 }); // busybox sleep as PID 1 ignores SIGTERM: SIGKILL after 1 s, exit 137
    const seenStopped = await within('job container exited in /health', INTERVAL_MS, async () => {
      const s = container(await health(), jobName);
      return s?.status === 'exited';
    });
    const m = await metrics();
    const h = await health();
    process.stdout.write(
      `job container seen running after ${seenRunning} ms, exited ${seenStopped} ms after stop\n`,
    );
    expect(container(h, jobName)).toMatchObject({
      kind: 'job',
      running: false,
      exitCode: 137,
      oomKilled: false,
    });
    expect(metricValue(m, 'container_up', { name: jobName })).toBe(0);
    expect(metricValue(m, 'container_exit_code', { name: jobName })).toBe(137);
    expect(metricValue(m, 'container_memory_usage_bytes', { name: jobName })).toBeUndefined();
  });

  it('a HEALTH_CONTAINERS container stopped from outside degrades /health with its exit code', async () => {
    await docker.getContainer(serviceName).stop({ t: 1 });
    await within('service container exited', INTERVAL_MS, async () => {
      const h = await health();
      return h.problems.includes(`container ${serviceName}: exited (exit 137)`);
    });
    const h = await health();
    expect(h.status).toBe('degraded');
    expect(h.ready).toBe(true);
    expect(metricValue(await metrics(), 'container_up', { name: serviceName })).toBe(0);
  });
});
