import { DOCKER_UNREACHABLE_CODES, WORKER_LABEL } from '../../../docker/src';
import { createRegistry } from '../../../metrics/src';
import { ContainerMetrics } from './metrics';
import { ContainerProbe } from './probe';
import type { ContainerEvent, ContainerInspect, ContainerSource } from './source';

function fakeSource() {
  const containers = new Map<string, ContainerInspect>();
  let listCalls = 0;
  let emit: (e: ContainerEvent) => void = () => undefined;
  let down: Error | undefined;
  const source: ContainerSource = {
    ping: async () => undefined,
    listByLabel: async (label) => {
      listCalls++;
      if (down) throw down;
      const [k, v] = label.split('=');
      return [...containers.values()].filter((c) => c.labels[k] === v).map((c) => c.id);
    },
    inspect: async (idOrName) =>
      containers.get(idOrName) ?? [...containers.values()].find((c) => c.name === idOrName),
    stats: async () => ({ memoryUsageBytes: 1000, cpuUsageSeconds: 2.5 }),
    events: async (onEvent) => {
      emit = onEvent;
      return () => (emit = () => undefined);
    },
  };
  const add = (id: string, name: string, labels: Record<string, string>) =>
    containers.set(id, {
      id,
      name,
      status: 'running',
      running: true,
      restartCount: 0,
      oomKilled: false,
      exitCode: 0,
      labels,
    });
  return {
    source,
    containers,
    add,
    emit: (e: ContainerEvent) => emit(e),
    lists: () => listCalls,
    setDown: (e?: Error) => (down = e),
  };
}

describe('ContainerProbe (fake Docker)', () => {
  it('refreshes on a watched event about our containers only, and records metrics', async () => {
    const f = fakeSource();
    f.add('a', 'job-a', { [WORKER_LABEL]: 'w1' });
    f.add('b', 'job-b', { [WORKER_LABEL]: 'w2' });
    const registry = createRegistry('worker');
    const metrics = new ContainerMetrics(registry);
    const probe = new ContainerProbe({
      source: f.source,
      workerName: 'w1',
      intervalMs: 600_000,
      onSnapshot: (s) => metrics.record(s),
    });
    const first = await probe.start();
    expect(first.containers.map((c) => c.name)).toEqual(['job-a']);
    const lists = f.lists();
    f.emit({ action: 'die', id: 'b', attributes: { name: 'job-b', [WORKER_LABEL]: 'w2' } });
    f.emit({
      action: 'exec_start: sh',
      id: 'a',
      attributes: { name: 'job-a', [WORKER_LABEL]: 'w1' },
    });
    await new Promise((r) => setImmediate(r));
    expect(f.lists()).toBe(lists);

    Object.assign(f.containers.get('a')!, {
      status: 'exited',
      running: false,
      exitCode: 3,
      oomKilled: true,
      restartCount: 2,
    });
    const changed = new Promise((r) => probe.once('snapshot', r));
    f.emit({ action: 'oom', id: 'a', attributes: { name: 'job-a', [WORKER_LABEL]: 'w1' } });
    await changed;
    expect(probe.snapshot().containers[0]).toEqual({
      id: 'a',
      name: 'job-a',
      kind: 'job',
      status: 'exited',
      running: false,
      restartCount: 2,
      oomKilled: true,
      exitCode: 3,
    });
    const get = async (n: string) => (await registry.getSingleMetric(n)!.get()).values;
    expect(await get('container_up')).toEqual([{ labels: { name: 'job-a' }, value: 0 }]);
    expect(await get('container_oom_killed')).toEqual([{ labels: { name: 'job-a' }, value: 1 }]);
    expect(await get('container_restarts_total')).toEqual([
      { labels: { name: 'job-a' }, value: 2 },
    ]);
    expect(await get('container_exit_code')).toEqual([{ labels: { name: 'job-a' }, value: 3 }]);
    expect(await get('container_memory_usage_bytes')).toEqual([]);

    f.containers.delete('a');
    await probe.refresh();
    expect(await get('container_up')).toEqual([]);
    await probe.stop();
  });

  it('coalesces a burst of events into at most one extra refresh', async () => {
    const f = fakeSource();
    f.add('a', 'job-a', { [WORKER_LABEL]: 'w1' });
    const probe = new ContainerProbe({ source: f.source, workerName: 'w1', intervalMs: 600_000 });
    await probe.start();
    const before = f.lists();
    await Promise.all([probe.refresh(), probe.refresh(), probe.refresh(), probe.refresh()]);
    expect(f.lists() - before).toBe(2);
    await probe.stop();
  });

  it('reports Docker unreachable with the reason, keeps the last containers, clears metrics', async () => {
    const f = fakeSource();
    f.add('a', 'job-a', { [WORKER_LABEL]: 'w1' });
    const registry = createRegistry('worker');
    const metrics = new ContainerMetrics(registry);
    const probe = new ContainerProbe({
      source: f.source,
      workerName: 'w1',
      intervalMs: 600_000,
      onSnapshot: (s) => metrics.record(s),
    });
    await probe.start();
    f.setDown(Object.assign(new Error('connect ECONNREFUSED /x.sock'), { code: 'ECONNREFUSED' }));
    const s = await probe.refresh();
    await probe.stop();
    expect(s.ok).toBe(false);
    expect(s.error).toMatchObject({
      reason: 'unreachable',
      message: 'connect ECONNREFUSED /x.sock',
    });
    expect(s.containers.map((c) => c.name)).toEqual(['job-a']);
    expect((await registry.getSingleMetric('container_up')!.get()).values).toEqual([]);
    expect((await registry.getSingleMetric('container_probe_up')!.get()).values[0].value).toBe(0);
  });

  it('calls every code of DOCKER_UNREACHABLE_CODES unreachable, and any other failure an error', async () => {
    const f = fakeSource();
    const probe = new ContainerProbe({ source: f.source, workerName: 'w1', intervalMs: 600_000 });
    await probe.start();
    const reasonFor = async (code?: string) => {
      f.setDown(Object.assign(new Error(`docker failed: ${code}`), { code }));
      return (await probe.refresh()).error?.reason;
    };
    for (const code of DOCKER_UNREACHABLE_CODES)
      expect([code, await reasonFor(code)]).toEqual([code, 'unreachable']);
    expect(await reasonFor('EPERM')).toBe('error');
    expect(await reasonFor(undefined)).toBe('error');
    await probe.stop();
  });
});
