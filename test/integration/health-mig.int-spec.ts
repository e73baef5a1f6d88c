import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { GpuSelection } from '../../libs/config/src';
import { createRegistry, type Registry } from '../../libs/metrics/src';
import {
  GpuMetrics,
  GpuSampler,
  NVIDIA_SMI_ARGS,
  nvidiaSmiQuery,
  type GpuDeviceInfo,
} from '../../libs/health/src';

jest.setTimeout(30_000);

/**
 * MIG discovery through the fake nvidia-smi that replays real captures of MIG hosts
 * (test/fixtures/nvidia-smi/mig, README.md there): what the sampler, the health verdict and the
 * metrics make of them, and a re-partition between two samples.
 */
const MIG = path.join(__dirname, '..', 'fixtures', 'nvidia-smi', 'mig');
const MIB = 1024 * 1024;
const GPU0 = 'GPU-00000000-0000-0000-0000-000000000000';
const GPU1 = 'GPU-00000001-0000-0000-0000-000000000001';
const mig = (n: number) => `MIG-0000000${n}-0000-0000-0000-00000000000${n}`;
const NEW_3G = 'MIG-f165f0ad-bde2-5b72-acdf-73bbf48eeb2c';
/** The first argument of the probe's query, as the fake logs each call. */
const QUERY = NVIDIA_SMI_ARGS[0];

const dir = mkdtempSync(path.join(tmpdir(), 'gsc-mig-it-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A folder the fake replays, as a symbolic link that `layout()` re-points atomically. */
function host(initial: string) {
  const link = path.join(dir, `layout-${Math.random().toString(36).slice(2)}`);
  symlinkSync(path.join(MIG, initial), link);
  const calls = `${link}.calls`;
  writeFileSync(calls, '');
  return {
    env: {
      ...process.env,
      PATH: `${MIG}:${process.env.PATH ?? ''}`,
      NVIDIA_SMI_FIXTURE: link,
      NVIDIA_SMI_CALLS: calls,
    },
    /** An admin re-partitions: the next call answers with another capture. */
    layout(next: string) {
      symlinkSync(path.join(MIG, next), `${link}.new`);
      renameSync(`${link}.new`, link);
    },
    calls: () => readFileSync(calls, 'utf8').split('\n').filter(Boolean),
  };
}

function setup(initial: string, selection: GpuSelection = { kind: 'all' }, maxTemp = 90) {
  const h = host(initial);
  const registry = createRegistry('worker');
  const metrics = new GpuMetrics(registry, { hostname: 'gpu-host-1' });
  const sampler = new GpuSampler({
    query: nvidiaSmiQuery({ env: h.env }),
    selection,
    maxTemp,
    intervalMs: 60_000,
    onSnapshot: (s) => metrics.record(s),
  });
  return { ...h, registry, sampler };
}

async function series(registry: Registry, name: string) {
  return (await registry.getSingleMetric(name)!.get()).values;
}

describe('the MIG fake nvidia-smi', () => {
  it('answers only the probe query, -L and -q, and says which capture it needs', () => {
    const run = (args: string[], env: NodeJS.ProcessEnv) => {
      try {
        execFileSync(path.join(MIG, 'nvidia-smi'), args, { env, stdio: 'pipe' });
        return { status: 0, stderr: '' };
      } catch (err) {
        const e = err as { status: number; stderr: Buffer };
        return { status: e.status, stderr: String(e.stderr) };
      }
    };
    const { env } = host('h100');
    const ordered = { ...env, CUDA_DEVICE_ORDER: 'PCI_BUS_ID' };
    expect(run(['-L'], ordered).status).toBe(0);
    expect(run(['-q', '-d', 'MEMORY'], ordered)).toMatchObject({ status: 64 });
    expect(run(['-L'], { ...ordered, NVIDIA_SMI_FIXTURE: '' }).stderr).toContain(
      'set NVIDIA_SMI_FIXTURE',
    );
  });
});

describe('MIG discovery through the sampler (real H100 and H200 output)', () => {
  it('lists the H100 instances as devices under their GPU, which is itself none', async () => {
    const { sampler } = setup('h100');
    const snap = await sampler.start();
    await sampler.stop();
    expect(snap.error).toBeUndefined();
    expect(snap.gpus).toHaveLength(1);
    expect(snap.gpus[0]).toMatchObject({ index: 0, uuid: GPU0, migEnabled: true, healthy: true });
    expect(snap.gpus[0].mig?.map((i) => [i.uuid, i.profile, i.healthy])).toEqual([
      [mig(0), '3g.40gb', true],
      [mig(1), '2g.20gb', true],
      [mig(2), '1g.10gb', true],
      [mig(3), '1g.10gb', true],
    ]);
    expect(sampler.devices()).toEqual<GpuDeviceInfo[]>([
      {
        index: 0,
        uuid: mig(0),
        name: 'NVIDIA H100 80GB HBM3',
        memoryTotalBytes: 40448 * MIB,
        parent: GPU0,
        profile: '3g.40gb',
        gpuInstanceId: 2,
        healthy: true,
      },
      expect.objectContaining({ uuid: mig(1), memoryTotalBytes: 20096 * MIB, gpuInstanceId: 3 }),
      expect.objectContaining({ uuid: mig(2), memoryTotalBytes: 9984 * MIB, gpuInstanceId: 9 }),
      expect.objectContaining({ uuid: mig(3), memoryTotalBytes: 9984 * MIB, gpuInstanceId: 10 }),
    ]);
    expect(sampler.isHealthy(mig(2))).toBe(true);
    expect(sampler.isHealthy(GPU0)).toBe(false);
    expect(sampler.isHealthy(0)).toBe(false);
  });

  it('keeps a GPU without MIG one device beside a partitioned one', async () => {
    const { sampler } = setup('h100-h200');
    await sampler.start();
    await sampler.stop();
    expect(sampler.devices().map((d) => [d.index, d.uuid, d.profile ?? null])).toEqual([
      [0, mig(0), '3g.40gb'],
      [0, mig(1), '2g.20gb'],
      [0, mig(2), '1g.10gb'],
      [0, mig(3), '1g.10gb'],
      [1, GPU1, null],
    ]);
    expect(sampler.devices()[4].memoryTotalBytes).toBe(143771 * MIB);
    expect(sampler.isHealthy(1)).toBe(true);
  });

  it('calls -L and -q only on a host with MIG enabled', async () => {
    const plain = setup('h200-plain');
    await plain.sampler.start();
    await plain.sampler.sample();
    await plain.sampler.stop();
    expect(plain.calls()).toEqual([QUERY, QUERY]);
    expect(plain.sampler.devices().map((d) => d.uuid)).toEqual([GPU0]);
    const partitioned = setup('h200');
    await partitioned.sampler.start();
    await partitioned.sampler.stop();
    expect([...partitioned.calls()].sort()).toEqual([QUERY, '-L', '-q']);
  });

  it('selects by GPU_DEVICES: a MIG UUID alone, a GPU index with all its instances, one gone', async () => {
    const one = setup('h100', {
      kind: 'list',
      ids: [mig(1).toLowerCase(), 'MIG-deadbeef-0000-0000-0000-000000000000'],
    });
    const snap = await one.sampler.start();
    await one.sampler.stop();
    expect(one.sampler.devices().map((d) => d.uuid)).toEqual([mig(1)]);
    expect(snap.missing).toEqual(['MIG-deadbeef-0000-0000-0000-000000000000']);
    const byIndex = setup('h100-h200', { kind: 'list', ids: ['0'] });
    await byIndex.sampler.start();
    await byIndex.sampler.stop();
    expect(byIndex.sampler.devices().map((d) => d.uuid)).toEqual([0, 1, 2, 3].map(mig));
  });

  it("applies the GPU's heat to every instance", async () => {
    const { sampler } = setup('h100', { kind: 'all' }, 42);
    const snap = await sampler.start();
    await sampler.stop();
    expect(snap.gpus[0].healthy).toBe(false);
    for (const i of snap.gpus[0].mig ?? [])
      expect(i.reasons).toEqual(['temperature 42 °C ≥ GPU_MAX_TEMP 42 °C']);
    expect(sampler.healthyGpus()).toEqual([]);
  });

  it('publishes per-instance metrics with DCGM MIG labels, and the GPU series as before', async () => {
    const { sampler, registry } = setup('h100');
    await sampler.start();
    await sampler.stop();
    const text = await registry.metrics();
    // DCGM exporter's label order: the GPU's ids, then GPU_I_PROFILE and GPU_I_ID, then Hostname.
    const id = `gpu="0",UUID="${GPU0}",modelName="NVIDIA H100 80GB HBM3"`;
    const host = 'Hostname="gpu-host-1",daemon="worker"';
    expect(text).toContain(
      `DCGM_FI_DEV_FB_USED{${id},GPU_I_PROFILE="3g.40gb",GPU_I_ID="2",${host}} 26\n`,
    );
    expect(text).toContain(
      `DCGM_FI_DEV_FB_FREE{${id},GPU_I_PROFILE="1g.10gb",GPU_I_ID="10",${host}} 9976\n`,
    );
    expect(text).toContain(`DCGM_FI_DEV_FB_USED{${id},${host}} 59\n`);
    expect(text).toContain(`DCGM_FI_DEV_GPU_TEMP{${id},${host}} 42\n`);
    expect(text).not.toMatch(/DCGM_FI_DEV_GPU_UTIL\{/);
    expect(text).toContain(
      `nvidia_smi_memory_total_bytes{uuid="${mig(1)}",daemon="worker"} ${20096 * MIB}\n`,
    );
    expect(text).toContain(
      `gpu_healthy{gpu="0",uuid="${mig(3)}",GPU_I_PROFILE="1g.10gb",GPU_I_ID="10",daemon="worker"} 1\n`,
    );
    expect(text).toContain(`gpu_healthy{gpu="0",uuid="${GPU0}",daemon="worker"} 1\n`);
  });

  it('a re-partition between samples: old instances vanish (series gone), the new one appears', async () => {
    const { sampler, registry, layout } = setup('h200');
    const events: GpuDeviceInfo[][] = [];
    sampler.on('devices', (d: GpuDeviceInfo[]) => events.push(d));
    await sampler.start();
    await sampler.sample();
    expect(events).toHaveLength(1);
    layout('h200-580');
    const after = await sampler.sample();
    await sampler.stop();
    expect(events.map((e) => e.map((d) => d.profile))).toEqual([
      ['1c.3g.71gb', '2c.3g.71gb', '2g.35gb', '1g.18gb', '1g.18gb'],
      ['3g.71gb'],
    ]);
    expect(sampler.devices().map((d) => d.uuid)).toEqual([NEW_3G]);
    expect(after.vanished?.map((v) => [v.uuid, v.profile, v.gpu, v.parent])).toEqual(
      [0, 1, 2, 3, 4].map((n, k) => [
        mig(n),
        ['1c.3g.71gb', '2c.3g.71gb', '2g.35gb', '1g.18gb', '1g.18gb'][k],
        0,
        GPU0,
      ]),
    );
    expect(after.missing).toEqual([]);
    const healthy = await series(registry, 'gpu_healthy');
    expect(healthy.map((s) => s.labels.uuid).sort()).toEqual([GPU0, NEW_3G]);
    const totals = await series(registry, 'nvidia_smi_memory_total_bytes');
    expect(totals.find((s) => s.labels.uuid === NEW_3G)?.value).toBe(71424 * MIB);
    expect(totals.some((s) => s.labels.uuid === mig(0))).toBe(false);
  });
});
