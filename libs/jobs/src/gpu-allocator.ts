/**
 * Hands out GPUs to jobs: each device has `slotsPerDevice` slots; a job asking for n GPUs gets n
 * distinct devices, the least loaded first, or nothing when that many are not free.
 */
export class GpuAllocator {
  private readonly used = new Map<string, number>();

  constructor(
    readonly devices: readonly string[],
    private readonly slotsPerDevice: number,
  ) {
    for (const d of devices) this.used.set(d, 0);
  }

  get capacity(): number {
    return this.devices.length * this.slotsPerDevice;
  }

  acquire(count: number): string[] | undefined {
    if (count <= 0) return [];
    const free = this.devices
      .filter((d) => this.used.get(d)! < this.slotsPerDevice)
      .sort((a, b) => this.used.get(a)! - this.used.get(b)!);
    if (free.length < count) return undefined;
    const got = free.slice(0, count);
    for (const d of got) this.used.set(d, this.used.get(d)! + 1);
    return got;
  }

  /** Gives devices back; safe to call once per acquire on every ending. */
  release(devices: readonly string[]): void {
    for (const d of devices) {
      const n = this.used.get(d);
      if (n !== undefined && n > 0) this.used.set(d, n - 1);
    }
  }

  inUse(): Record<string, number> {
    return Object.fromEntries(this.used);
  }
}
