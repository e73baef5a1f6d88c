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
    catalog: { list: () => [], problems: () => [] },
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

describe('HealthMonitor answers in bounded time whatever hangs', () => {
  const never = () => new Promise<never>(() => undefined);

  /** A job system where Redis refuses connections, and every other part hangs. */
  function hungJobs() {
    const client = Object.assign(new EventEmitter(), {
      status: 'reconnecting',
      ping: jest.fn(never),
      info: never,
      config: never,
    });
    const rt = {
      records: { client, bus: new EventEmitter(), counts: never },
      queue: { counts: never },
      dockerStatus: never,
      catalog: { list: () => [{ runner: 'docker' }], problems: () => [] },
      redisUrl: 'redis://:***@10.0.0.5:6379/2',
    } as unknown as JobsRuntime;
    return { rt, client };
  }

  function shortMonitor() {
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
      probeTimeoutMs: 50,
    });
  }

  it('/health names Redis with its URL and the connection error, and each hung part', async () => {
    const m = shortMonitor();
    const { rt, client } = hungJobs();
    m.attachJobs(rt);
    client.emit('error', new Error('connect ECONNREFUSED 10.0.0.5:6379'));
    const report = await m.report();
    expect(report.status).toBe('down');
    expect(report.problems).toEqual([
      'redis: Redis at redis://:***@10.0.0.5:6379/2 is down: connect ECONNREFUSED 10.0.0.5:6379',
      'queue: not answering: Redis is down',
      'docker: the Docker Engine got no answer within 50 ms: docker experiments wait until it answers; the others run',
    ]);
    expect(report.redis).toMatchObject({
      up: false,
      url: 'redis://:***@10.0.0.5:6379/2',
      error: 'connect ECONNREFUSED 10.0.0.5:6379',
    });
    // Not connected: no PING was queued behind the reconnects.
    expect(client.ping).not.toHaveBeenCalled();
    // /metrics too, though the job counts never come.
    expect(await m.metrics()).toMatch(/^redis_up{daemon="worker"} 0$/m);
    await m.stop();
  });

  it('a connected Redis that does not answer PING is down with the timeout and the last error', async () => {
    const m = shortMonitor();
    const { rt, client } = hungJobs();
    m.attachJobs(rt);
    client.emit('error', new Error('read ETIMEDOUT'));
    client.status = 'ready';
    const ready = await m.readiness();
    expect(ready.redis?.problems).toEqual([
      'Redis at redis://:***@10.0.0.5:6379/2 is down: PING got no answer within 50 ms (last connection error: read ETIMEDOUT)',
    ]);
    // Ready again: the old error is no longer the cause.
    client.emit('ready');
    const again = await m.readiness();
    expect(again.redis?.error).toBe('PING got no answer within 50 ms');
    await m.stop();
  });
});
