import type { GpuSelection } from '../../config/src';

/** One GPU as nvidia-smi, Docker's DeviceIDs and CUDA (PCI_BUS_ID order) agree on it. */
export interface GpuDevice {
  index: number;
  uuid: string;
}

/** What the health monitor knows about this host's GPUs (implemented from the nvidia-smi sampler). */
export interface GpuInventory {
  /** GPUs present now (nvidia-smi); [] when none or nvidia-smi is missing. */
  detect(): Promise<GpuDevice[]>;
  /** false once the health monitor marks this GPU unhealthy (hot, ECC errors, failing, lost). */
  isHealthy(uuid: string): boolean;
}

/**
 * The GPU ids this worker hands out, from GPU_DEVICES and detection. `all`: every detected GPU;
 * a list of indexes/UUIDs: each matched against detection and replaced by its UUID (what Docker's
 * DeviceIDs needs); one that is not detected is kept as given, with a warning; `none`: none.
 * Without an inventory the list is taken as given (and `all` means none).
 */
export async function resolveGpuDevices(
  selection: GpuSelection,
  inventory: GpuInventory | undefined,
  warn: (msg: string) => void,
): Promise<string[]> {
  if (selection.kind === 'none') return [];
  if (!inventory) {
    if (selection.kind === 'all') warn('GPU_DEVICES=all but no GPU detection here: no GPUs');
    return selection.kind === 'list' ? [...new Set(selection.ids)] : [];
  }
  const detected = await inventory.detect();
  if (selection.kind === 'all') return detected.map((g) => g.uuid);
  const out: string[] = [];
  for (const id of selection.ids) {
    const found = /^\d+$/.test(id)
      ? detected.find((g) => g.index === Number(id))
      : detected.find((g) => g.uuid.toLowerCase() === id.toLowerCase());
    if (!found) warn(`GPU_DEVICES names ${id}, which nvidia-smi does not list: used as given`);
    const uuid = found?.uuid ?? id;
    if (!out.includes(uuid)) out.push(uuid);
  }
  return out;
}

/**
 * Hands out GPUs to jobs: each device has `slotsPerDevice` slots; a job asking for n GPUs gets n
 * distinct healthy devices, the least loaded first, or nothing when that many are not free. A GPU
 * that `isHealthy` rejects gets no new job (its running jobs keep their slot until they end).
 */
export class GpuAllocator {
  private readonly used = new Map<string, number>();

  constructor(
    readonly devices: readonly string[],
    private readonly slotsPerDevice: number,
    private readonly isHealthy: (id: string) => boolean = () => true,
  ) {
    for (const d of devices) this.used.set(d, 0);
  }

  /** Slots in all (healthy or not): what the GPU queue's concurrency is sized for. */
  get capacity(): number {
    return this.devices.length * this.slotsPerDevice;
  }

  acquire(count: number): string[] | undefined {
    if (count <= 0) return [];
    const free = this.devices
      .filter((d) => this.used.get(d)! < this.slotsPerDevice && this.isHealthy(d))
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
