import { createRegistry } from '../../../metrics/src/registry';
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
