import { GpuAllocator } from './gpu-allocator';

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
});
