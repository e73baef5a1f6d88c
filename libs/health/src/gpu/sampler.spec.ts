import { createRegistry } from '../../../metrics/src';
import { GpuMetrics } from './metrics';
import type { NvidiaSmiResult } from './nvidia-smi';
import { GpuSampler } from './sampler';

const reading = (temperatureC: number) => ({
  index: 0,
  uuid: 'GPU-aa',
  name: 'X',
  pciBusId: 'b',
  temperatureC,
  utilizationGpuPercent: 0,
});

describe('GpuSampler', () => {
  it('never runs two queries at once, even when one takes longer than the interval', async () => {
    let active = 0;
    let maxActive = 0;
    let calls = 0;
    const sampler = new GpuSampler({
      query: async (): Promise<NvidiaSmiResult> => {
        calls++;
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise((r) => setTimeout(r, 30));
        active--;
        return { ok: true, gpus: [reading(40)], durationMs: 30 };
      },
      selection: { kind: 'all' },
      maxTemp: 90,
      intervalMs: 5,
    });
    await sampler.start();
    await Promise.all([sampler.sample(), sampler.sample(), sampler.sample()]);
    await new Promise((r) => setTimeout(r, 150));
    await sampler.stop();
    const after = calls;
    await new Promise((r) => setTimeout(r, 50));
    expect(maxActive).toBe(1);
    expect(calls).toBe(after); // stopped means stopped
    expect(calls).toBeGreaterThanOrEqual(3);
  });

  it('emits health only when the set of healthy GPUs changes, and recovers', async () => {
    const results: NvidiaSmiResult[] = [
      { ok: true, gpus: [reading(40)], durationMs: 1 },
      { ok: true, gpus: [reading(41)], durationMs: 1 },
      { ok: true, gpus: [reading(95)], durationMs: 1 },
      { ok: false, reason: 'timeout', message: 'slow', durationMs: 1 },
      { ok: true, gpus: [reading(50)], durationMs: 1 },
    ];
    const registry = createRegistry('worker');
    const metrics = new GpuMetrics(registry, { hostname: 'h' });
    const sampler = new GpuSampler({
      query: async () => results.shift()!,
      selection: { kind: 'all' },
      maxTemp: 90,
      intervalMs: 60_000,
      onSnapshot: (s) => metrics.record(s),
    });
    const events: number[] = [];
    sampler.on('health', (h: unknown[]) => events.push(h.length));
    for (let i = 0; i < 5; i++) await sampler.sample();
    expect(events).toEqual([1, 0, 1]);
    expect(sampler.snapshot().stale).toBe(false);
    expect(sampler.snapshot().error).toBeUndefined();
    const errors = await registry.getSingleMetric('gpu_probe_errors_total')!.get();
    expect(errors.values).toEqual([{ labels: { reason: 'timeout' }, value: 1 }]);
    const temp = await registry.getSingleMetric('nvidia_smi_temperature_gpu')!.get();
    expect(temp.values).toEqual([{ labels: { uuid: 'GPU-aa' }, value: 50 }]);
  });

  it('removes the series of a GPU that disappears', async () => {
    const results: NvidiaSmiResult[] = [
      { ok: true, gpus: [reading(40)], durationMs: 1 },
      { ok: true, gpus: [], durationMs: 1 },
    ];
    const registry = createRegistry('worker');
    const metrics = new GpuMetrics(registry, { hostname: 'h' });
    const sampler = new GpuSampler({
      query: async () => results.shift()!,
      selection: { kind: 'all' },
      maxTemp: 90,
      intervalMs: 60_000,
      onSnapshot: (s) => metrics.record(s),
    });
    await sampler.sample();
    expect((await registry.getSingleMetric('gpu_healthy')!.get()).values).toHaveLength(1);
    await sampler.sample();
    expect((await registry.getSingleMetric('gpu_healthy')!.get()).values).toEqual([]);
    expect((await registry.getSingleMetric('DCGM_FI_DEV_GPU_UTIL')!.get()).values).toEqual([]);
  });
});

describe('GpuSampler with MIG instances', () => {
  const inst = (n: number, extra = {}) => ({
    uuid: `MIG-0000000${n}-0000-0000-0000-00000000000${n}`,
    device: n,
    profile: '1g.10gb',
    gpuInstanceId: 9 + n,
    ...extra,
  });
  const gpu = (instances: ReturnType<typeof inst>[]) => ({
    ...reading(40),
    migEnabled: true,
    mig: instances,
  });

  it('remembers a vanished instance until it is listed again, and gives no job to it meanwhile', async () => {
    const results: NvidiaSmiResult[] = [
      { ok: true, gpus: [gpu([inst(0), inst(1)])], durationMs: 1 },
      { ok: true, gpus: [gpu([inst(0)])], durationMs: 1 },
      { ok: false, reason: 'exit', message: 'driver', durationMs: 1 },
      { ok: true, gpus: [gpu([inst(0), inst(1)])], durationMs: 1 },
    ];
    const sampler = new GpuSampler({
      query: async () => results.shift()!,
      selection: { kind: 'all' },
      maxTemp: 90,
      intervalMs: 60_000,
    });
    await sampler.sample();
    expect(sampler.isHealthy(inst(1).uuid)).toBe(true);
    const gone = await sampler.sample();
    expect(gone.vanished?.map((v) => v.uuid)).toEqual([inst(1).uuid]);
    expect(sampler.isHealthy(inst(1).uuid)).toBe(false);
    expect((await sampler.sample()).vanished?.map((v) => v.uuid)).toEqual([inst(1).uuid]);
    expect((await sampler.sample()).vanished).toEqual([]);
    expect(sampler.isHealthy(inst(1).uuid)).toBe(true);
  });

  it('makes an instance with its own uncorrected ECC errors unhealthy, not its neighbours', async () => {
    const sampler = new GpuSampler({
      query: async () => ({
        ok: true,
        gpus: [gpu([inst(0, { eccUncorrectedVolatile: 3 }), inst(1)])],
        durationMs: 1,
      }),
      selection: { kind: 'all' },
      maxTemp: 90,
      intervalMs: 60_000,
    });
    const snap = await sampler.sample();
    expect(snap.gpus[0].healthy).toBe(true);
    expect(snap.gpus[0].mig?.map((i) => i.reasons)).toEqual([
      ['3 uncorrected ECC error(s) since the driver loaded'],
      [],
    ]);
    expect(sampler.healthyGpus()).toEqual([{ index: 0, uuid: inst(1).uuid }]);
  });
});
