import { randomBytes } from 'node:crypto';
import Docker from 'dockerode';
import { WORKER_LABEL } from '../../libs/docker/src';
import {
  ContainerMetrics,
  ContainerProbe,
  dockerContainerSource,
  type ContainerSnapshot,
} from '../../libs/health/src';
import { createRegistry, type Registry } from '../../libs/metrics/src';
import { TEST_IMAGE, testDockerHost } from '../support/docker';

jest.setTimeout(60_000);

const INTERVAL_MS = 5_000; // GPU_SAMPLE_INTERVAL's default: "within one interval"

async function value(registry: Registry, name: string, labels: Record<string, string>) {
  const { values } = await registry.getSingleMetric(name)!.get();
  return values.find((v) => Object.entries(labels).every(([k, w]) => String(v.labels[k]) === w))
    ?.value;
}

/** Resolves with the first snapshot that satisfies `test`, or rejects after `ms`. */
function waitFor(
  probe: ContainerProbe,
  test: (s: ContainerSnapshot) => boolean,
  ms: number,
): Promise<ContainerSnapshot> {
  return new Promise((resolve, reject) => {
    if (test(probe.snapshot())) return resolve(probe.snapshot());
    const t = setTimeout(() => {
      probe.off('snapshot', on);
      reject(
        new Error(`no matching snapshot within ${ms} ms: ${JSON.stringify(probe.snapshot())}`),
      );
    }, ms);
    const on = (s: ContainerSnapshot) => {
      if (!test(s)) return;
      clearTimeout(t);
      probe.off('snapshot', on);
      resolve(s);
    };
    probe.on('snapshot', on);
  });
}

describe('container probe against the real Docker Engine', () => {
  const host = testDockerHost();
  if (host.includes('/var/run/docker.sock')) throw new Error('refusing the shared Docker Engine');
  const docker = new Docker({ socketPath: new URL(host).pathname });
  const tag = randomBytes(4).toString('hex');
  const worker = `health-it-${tag}`;
  const serviceName = `health-svc-${tag}`;
  const created: Docker.Container[] = [];

  async function run(name: string, labels: Record<string, string>): Promise<Docker.Container> {
    const c = await docker.createContainer({
      name,
      Image: TEST_IMAGE,
      Cmd: ['sh', '-c', 'sleep 60'],
      Labels: labels,
      HostConfig: { NetworkMode: 'none' },
    });
    created.push(c);
    await c.start();
    return c;
  }

  afterAll(async () => {
    await Promise.all(created.map((c) => c.remove({ force: true }).catch(() => undefined)));
  });

  it('sees a job container stopped from outside, with its exit code, through the events stream', async () => {
    const job = await run(`health-job-${tag}`, { [WORKER_LABEL]: worker });
    await run(`health-other-${tag}`, { [WORKER_LABEL]: `someone-else-${tag}` });
    const registry = createRegistry('worker');
    const metrics = new ContainerMetrics(registry);
    const probe = new ContainerProbe({
      source: dockerContainerSource(host),
      workerName: worker,
      // Periodic refresh far away: only the events stream can make the change show in time.
      intervalMs: 600_000,
      onSnapshot: (s) => metrics.record(s),
    });
    try {
      const first = await probe.start();
      expect(first.ok).toBe(true);
      expect(first.watching).toBe(true);
      expect(first.containers).toHaveLength(1);
      expect(first.containers[0]).toMatchObject({
        name: `health-job-${tag}`,
        kind: 'job',
        status: 'running',
        running: true,
        restartCount: 0,
        oomKilled: false,
      });
      expect(first.containers[0].exitCode).toBeUndefined();
      const name = `health-job-${tag}`;
      expect(await value(registry, 'container_up', { name })).toBe(1);
      // Stats arrive just after the state.
      const withStats = await waitFor(
        probe,
        (s) => s.containers[0]?.memoryUsageBytes !== undefined,
        5000,
      );
      expect(withStats.containers[0].memoryUsageBytes).toBeGreaterThan(0);
      expect(await value(registry, 'container_memory_usage_bytes', { name })).toBeGreaterThan(0);
      expect(
        await value(registry, 'container_cpu_usage_seconds_total', { name }),
      ).toBeGreaterThanOrEqual(0);

      const killedAt = performance.now();
      await job.kill({ signal: 'SIGKILL' });
      const after = await waitFor(probe, (s) => s.containers[0]?.running === false, INTERVAL_MS);
      const took = performance.now() - killedAt;
      expect(took).toBeLessThan(INTERVAL_MS);
      expect(after.containers[0]).toMatchObject({
        status: 'exited',
        running: false,
        exitCode: 137,
      });
      expect(await value(registry, 'container_up', { name })).toBe(0);
      expect(await value(registry, 'container_exit_code', { name })).toBe(137);
      expect(await value(registry, 'container_oom_killed', { name })).toBe(0);
      expect(await value(registry, 'container_memory_usage_bytes', { name })).toBeUndefined();
      const text = await registry.metrics();
      expect(text).toContain(`container_up{name="${name}",daemon="worker"} 0\n`);
      expect(text).toContain(`container_exit_code{name="${name}",daemon="worker"} 137\n`);
      expect(text).not.toContain(`health-other-${tag}`);
    } finally {
      await probe.stop();
    }
  });

  it('watches a HEALTH_CONTAINERS service by name, and reports a missing one', async () => {
    const svc = await run(serviceName, {});
    const probe = new ContainerProbe({
      source: dockerContainerSource(host),
      workerName: worker,
      names: [serviceName, `absent-${tag}`],
      intervalMs: 600_000,
    });
    try {
      const first = await probe.start();
      const byName = (s: ContainerSnapshot, n: string) => s.containers.find((c) => c.name === n);
      expect(byName(first, serviceName)).toMatchObject({ kind: 'service', running: true });
      expect(byName(first, `absent-${tag}`)).toMatchObject({ status: 'missing', running: false });
      await svc.stop({ t: 0 });
      const after = await waitFor(
        probe,
        (s) => byName(s, serviceName)?.running === false,
        INTERVAL_MS,
      );
      expect(byName(after, serviceName)).toMatchObject({ status: 'exited', exitCode: 137 });
    } finally {
      await probe.stop();
    }
  });

  it('reports an unreachable Docker Engine with the reason, without throwing', async () => {
    const registry = createRegistry('worker');
    const metrics = new ContainerMetrics(registry);
    const probe = new ContainerProbe({
      source: dockerContainerSource(`unix:///tmp/gsc-no-such-${tag}.sock`),
      workerName: worker,
      intervalMs: 600_000,
      onSnapshot: (s) => metrics.record(s),
    });
    const snap = await probe.start();
    await probe.stop();
    expect(snap.ok).toBe(false);
    expect(snap.watching).toBe(false);
    expect(snap.error?.reason).toBe('unreachable');
    expect(snap.error?.message).toContain('ENOENT');
    expect(await value(registry, 'container_probe_up', {})).toBe(0);
  });
});
