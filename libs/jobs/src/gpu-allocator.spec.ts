import { GpuAllocator, resolveGpuDevices, type GpuInventory } from './gpu-allocator';

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
