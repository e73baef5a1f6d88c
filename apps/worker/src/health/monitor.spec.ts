import { EventEmitter } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadWorkerConfig, silentLogger } from '../../../../libs/config/src';
import type { ContainerSource, RedisProbeClient } from '../../../../libs/health/src';
import type { DockerReadiness, JobsRuntime } from '../../../../libs/jobs/src';
import { createRegistry } from '../../../../libs/metrics/src';
import { HealthMonitor } from './monitor';

const noDocker: ContainerSource = {
  ping: async () => undefined,
  listByLabel: async () => [],
  inspect: async () => undefined,
  stats: async () => ({}),
  events: async () => () => undefined,
};

/** A job system with every probe it answers counted; Docker's answers wait for `open()`. */
function fakeJobs() {
  let waiting: ((r: DockerReadiness) => void)[] = [];
  const dockerStatus = jest.fn(
    () => new Promise<DockerReadiness>((resolve) => waiting.push(resolve)),
  );
  const open = (r: DockerReadiness) => {
    for (const resolve of waiting) resolve(r);
    waiting = [];
  };
  const client: RedisProbeClient = {
    ping: jest.fn(async () => 'PONG'),
    info: async () => '',
    config: async () => ['maxmemory-policy', 'noeviction'],
  };
  const counts = jest.fn(async () => ({ waiting: 0, active: 0 }));
  const rt = {
    records: { client, bus: new EventEmitter(), counts: async () => new Map() },
    queue: { counts },
    dockerStatus,
  } as unknown as JobsRuntime;
  return {
    rt,
    dockerStatus,
    ping: client.ping as jest.Mock,
    counts,
    open,
  };
}

function monitor() {
  const config = loadWorkerConfig({
    TUNNEL_KEY_FILE: '/etc/gpu-sidecar/key',
    GPU_DEVICES: 'none',
    DATA_FOLDER: mkdtempSync(path.join(tmpdir(), 'gsc-monitor-')),
  });
  return new HealthMonitor({
    config,
    log: silentLogger(),
    registry: createRegistry('worker'),
    containerSource: noDocker,
  });
}

describe('HealthMonitor.readiness', () => {
  it('gives concurrent callers one probe in flight, and probes again once it settled', async () => {
    const m = monitor();
    const f = fakeJobs();
    m.attachJobs(f.rt);

    // /health/ready, /health, /metrics and the monitor's loop, all at once.
    const direct = [m.readiness(), m.readiness(), m.readiness()];
    const report = m.report();
    const metrics = m.metrics();
    const docker: DockerReadiness = { reachable: true, required: false };
    f.open(docker);
    const results = await Promise.all(direct);
    await Promise.all([report, metrics]);

    expect(f.dockerStatus).toHaveBeenCalledTimes(1);
    expect(f.ping).toHaveBeenCalledTimes(1);
    expect(f.counts).toHaveBeenCalledTimes(2); // one count per queue: cpu and gpu
    expect(results[1]).toBe(results[0]);
    expect(results[2]).toBe(results[0]);
    expect(results[0]).toMatchObject({ docker, redis: { up: true }, queue: { ok: true } });

    const again = m.readiness();
    f.open({ reachable: false, reason: 'gone', required: true });
    expect((await again).docker).toEqual({ reachable: false, reason: 'gone', required: true });
    expect(f.dockerStatus).toHaveBeenCalledTimes(2);
    expect(f.ping).toHaveBeenCalledTimes(2);
    await m.stop();
  });
});
