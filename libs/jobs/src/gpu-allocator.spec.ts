import {
  GpuAllocator,
  resolveGpuDeviceInfo,
  resolveGpuDevices,
  type GpuDevice,
  type GpuInventory,
} from './gpu-allocator';

const U0 = 'GPU-0a0a0a0a-0000-0000-0000-000000000000';
const U1 = 'GPU-1b1b1b1b-1111-1111-1111-111111111111';

function inventory(unhealthy: string[] = []): GpuInventory {
  return {
    detect: async () => [
      { index: 0, uuid: U0 },
      { index: 1, uuid: U1 },
    ],
    isHealthy: (uuid) => !unhealthy.includes(uuid),
  };
}

describe('GPU allocator', () => {
  it('hands out each GPU once per slot and takes it back on release', () => {
    const a = new GpuAllocator(['0', '1'], 1);
    const x = a.acquire(1)!;
    const y = a.acquire(1)!;
    expect(new Set([...x, ...y])).toEqual(new Set(['0', '1']));
    expect(a.acquire(1)).toBeUndefined();
    a.release(x);
    expect(a.acquire(1)).toEqual(x);
  });

  it('gives a multi-GPU job distinct devices or nothing', () => {
    const a = new GpuAllocator(['0', '1', '2'], 2);
    expect(new Set(a.acquire(3)).size).toBe(3);
    expect(a.acquire(3)?.length).toBe(3);
    expect(a.acquire(1)).toBeUndefined();
  });

  it('gives CPU-only jobs no GPU and never runs out for them', () => {
    const a = new GpuAllocator([], 1);
    expect(a.acquire(0)).toEqual([]);
    expect(a.capacity).toBe(0);
  });

  it('gives no new job to a GPU the health monitor marks unhealthy, and takes it again once healthy', () => {
    const sick = new Set(['0']);
    const a = new GpuAllocator(['0', '1'], 2, (id) => !sick.has(id));
    expect(a.acquire(1)).toEqual(['1']);
    expect(a.acquire(1)).toEqual(['1']);
    expect(a.acquire(1)).toBeUndefined();
    expect(a.acquire(2)).toBeUndefined();
    sick.delete('0');
    expect(a.acquire(2)).toBeUndefined();
    expect(a.acquire(1)).toEqual(['0']);
  });

  it('still counts a GPU that turned unhealthy while its job ran, and frees it on release', () => {
    let healthy = true;
    const a = new GpuAllocator(['0'], 1, () => healthy);
    const got = a.acquire(1)!;
    healthy = false;
    a.release(got);
    expect(a.inUse()).toEqual({ '0': 0 });
    expect(a.acquire(1)).toBeUndefined();
  });
});

describe('GPU_DEVICES resolved against detection', () => {
  const warnings: string[] = [];
  const warn = (m: string) => warnings.push(m);
  beforeEach(() => (warnings.length = 0));

  it('all → every detected GPU by UUID; none → none', async () => {
    expect(await resolveGpuDevices({ kind: 'all' }, inventory(), warn)).toEqual([U0, U1]);
    expect(await resolveGpuDevices({ kind: 'none' }, inventory(), warn)).toEqual([]);
    expect(warnings).toEqual([]);
  });

  it('matches indexes and UUIDs (any case) to the detected UUIDs, once each', async () => {
    const ids = ['1', U0.toLowerCase(), '0'];
    expect(await resolveGpuDevices({ kind: 'list', ids }, inventory(), warn)).toEqual([U1, U0]);
    expect(warnings).toEqual([]);
  });

  it('keeps an id that is not detected as given, with a warning', async () => {
    const ids = ['0', '7', 'GPU-dead'];
    expect(await resolveGpuDevices({ kind: 'list', ids }, inventory(), warn)).toEqual([
      U0,
      '7',
      'GPU-dead',
    ]);
    expect(warnings.join('\n')).toMatch(/names 7.*used as given[\s\S]*names GPU-dead/);
  });

  it('without an inventory: the list as given, and all means none (with a warning)', async () => {
    expect(await resolveGpuDevices({ kind: 'list', ids: ['0', '2'] }, undefined, warn)).toEqual([
      '0',
      '2',
    ]);
    expect(await resolveGpuDevices({ kind: 'all' }, undefined, warn)).toEqual([]);
    expect(warnings).toHaveLength(1);
  });

  it('all with no GPU detected gives an empty list', async () => {
    const none: GpuInventory = { detect: async () => [], isHealthy: () => true };
    expect(await resolveGpuDevices({ kind: 'all' }, none, warn)).toEqual([]);
  });
});

describe('GPU allocator with MIG instances and sizes', () => {
  const MIB = 1024 * 1024;
  const H100 = 'GPU-00000000-0000-0000-0000-000000000000';
  const H200 = 'GPU-00000001-0000-0000-0000-000000000001';
  const mig = (n: number) => `MIG-0000000${n}-0000-0000-0000-00000000000${n}`;
  // The h100-h200 fixture's devices (test/fixtures/nvidia-smi/mig): four instances and a whole H200.
  const devices: GpuDevice[] = [
    { index: 0, uuid: mig(0), parent: H100, profile: '3g.40gb', memoryTotalBytes: 40448 * MIB },
    { index: 0, uuid: mig(1), parent: H100, profile: '2g.20gb', memoryTotalBytes: 20096 * MIB },
    { index: 0, uuid: mig(2), parent: H100, profile: '1g.10gb', memoryTotalBytes: 9984 * MIB },
    { index: 0, uuid: mig(3), parent: H100, profile: '1g.10gb', memoryTotalBytes: 9984 * MIB },
    { index: 1, uuid: H200, name: 'NVIDIA H200', memoryTotalBytes: 143771 * MIB },
  ];

  it('gives a job by count the smallest free device, keeping big ones for big asks', () => {
    const a = new GpuAllocator(devices, 1);
    expect(a.capacity).toBe(5);
    expect(a.acquire(1)).toEqual([mig(2)]);
    expect(a.acquire(2)).toEqual([mig(3), mig(1)]);
    expect(a.acquire(2)).toEqual([mig(0), H200]);
    expect(a.acquire(1)).toBeUndefined();
  });

  it('matches gpu_memory against each device and mig_profile by name', () => {
    const a = new GpuAllocator(devices, 1);
    expect(a.acquire({ count: 1, memoryBytes: 20e9 })).toEqual([mig(1)]);
    expect(a.acquire({ count: 1, memoryBytes: 20e9 })).toEqual([mig(0)]);
    expect(a.acquire({ count: 1, memoryBytes: 20e9 })).toEqual([H200]);
    expect(a.acquire({ count: 1, memoryBytes: 20e9 })).toBeUndefined();
    expect(a.acquire({ count: 2, migProfile: '1g.10gb' })).toEqual([mig(2), mig(3)]);
    expect(a.acquire({ count: 1, migProfile: '1g.10gb' })).toBeUndefined();
    const b = new GpuAllocator(devices, 1);
    expect(b.acquire({ count: 1, migProfile: '3g.40gb', memoryBytes: 40e9 })).toEqual([mig(0)]);
    // A whole GPU is never a MIG profile, whatever its memory.
    expect(b.acquire({ count: 1, migProfile: '7g.80gb' })).toBeUndefined();
  });

  it('refuses only what no device here could ever give, naming what exists', () => {
    const a = new GpuAllocator(devices, 1, () => false);
    expect(a.refusal({ count: 1, migProfile: '1g.10gb' })).toBeUndefined();
    expect(a.refusal({ count: 2, memoryBytes: 40e9 })).toBeUndefined();
    expect(a.refusal({ count: 3, migProfile: '1g.10gb' })).toBe(
      `no 3 device(s) on this worker match; it has: ${mig(0)} (3g.40gb, 40448 MiB, GPU 0), ` +
        `${mig(1)} (2g.20gb, 20096 MiB, GPU 0), ${mig(2)} (1g.10gb, 9984 MiB, GPU 0), ` +
        `${mig(3)} (1g.10gb, 9984 MiB, GPU 0), ${H200} (NVIDIA H200, 143771 MiB)`,
    );
    expect(a.refusal({ count: 1, memoryBytes: 200e9 })).toMatch(/^no 1 device\(s\)/);
    expect(new GpuAllocator(['GPU-x'], 1).refusal({ count: 1, memoryBytes: 1 })).toBe(
      'no 1 device(s) on this worker match; it has: GPU-x (memory unknown)',
    );
  });

  it('follows a re-partition: vanished devices get no job, their slots end with their jobs, new ones get jobs', () => {
    const a = new GpuAllocator(devices.slice(0, 4), 1);
    const held = a.acquire({ count: 1, migProfile: '2g.20gb' })!;
    const fresh: GpuDevice = {
      index: 0,
      uuid: 'MIG-f165f0ad-bde2-5b72-acdf-73bbf48eeb2c',
      parent: H100,
      profile: '7g.80gb',
      memoryTotalBytes: 81000 * MIB,
    };
    const gone = a.update([devices[0], fresh]);
    expect(gone.map((d) => d.uuid)).toEqual([mig(1), mig(2), mig(3)]);
    expect(a.devices).toEqual([mig(0), fresh.uuid]);
    expect(a.capacity).toBe(2);
    expect(a.inUse()).toEqual({ [mig(0)]: 0, [mig(1)]: 1, [fresh.uuid]: 0 });
    expect(a.acquire({ count: 1, migProfile: '2g.20gb' })).toBeUndefined();
    expect(a.acquire({ count: 1, migProfile: '7g.80gb' })).toEqual([fresh.uuid]);
    a.release(held);
    expect(a.inUse()).toEqual({ [mig(0)]: 0, [fresh.uuid]: 1 });
    expect(a.device(fresh.uuid)).toBe(fresh);
    expect(a.device(mig(1))).toBeUndefined();
  });

  it('GPU_DEVICES naming a partitioned GPU (index or UUID) resolves to its instances', async () => {
    const inv: GpuInventory = { detect: async () => devices, isHealthy: () => true };
    const warn = jest.fn();
    const byIndex = await resolveGpuDeviceInfo({ kind: 'list', ids: ['0'] }, inv, warn);
    expect(byIndex.map((d) => d.uuid)).toEqual([0, 1, 2, 3].map(mig));
    const byUuid = await resolveGpuDevices(
      { kind: 'list', ids: [H100.toLowerCase(), mig(1)] },
      inv,
      warn,
    );
    expect(byUuid).toEqual([0, 1, 2, 3].map(mig));
    expect(await resolveGpuDevices({ kind: 'list', ids: [mig(3), '1'] }, inv, warn)).toEqual([
      mig(3),
      H200,
    ]);
    expect(warn).not.toHaveBeenCalled();
  });
});
