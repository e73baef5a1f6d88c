import type { GpuSelection } from '../../config/src';

/**
 * One device a job can be given: a GPU (by the UUID nvidia-smi, Docker's DeviceIDs and CUDA in
 * PCI_BUS_ID order agree on), or one MIG instance of a GPU (`MIG-…`; then `parent` is its GPU's
 * UUID, `index` its GPU's index and `profile` its MIG profile).
 */
export interface GpuDevice {
  index: number;
  uuid: string;
  /** The GPU's name, for messages. */
  name?: string;
  /** Memory of the device (a MIG instance's own share); unknown for a GPU taken as given. */
  memoryTotalBytes?: number;
  parent?: string;
  profile?: string;
}

/** What the health monitor knows about this host's GPUs (implemented from the nvidia-smi sampler). */
export interface GpuInventory {
  /** Devices present now (nvidia-smi): GPUs, and MIG instances of partitioned GPUs. */
  detect(): Promise<GpuDevice[]>;
  /** false once the health monitor marks this device unhealthy (hot, ECC errors, failing, lost). */
  isHealthy(uuid: string): boolean;
  /**
   * Calls `listener` with the devices present each time they change (an admin re-partitioned a
   * GPU, a GPU was lost or came back), so new ones get jobs without a restart.
   */
  watch?(listener: (devices: GpuDevice[]) => void): void;
}

/** What a job asks of the GPUs it gets: `count` distinct devices, each matching the rest. */
export interface GpuRequest {
  count: number;
  /** Each device has at least this much memory (`gpu_memory`). */
  memoryBytes?: number;
  /** Each device is a MIG instance of this profile (`mig_profile`). */
  migProfile?: string;
}

/**
 * The devices this worker hands out, from GPU_DEVICES and detection. `all`: every detected
 * device; a list of indexes/UUIDs: what detection selected, in the list's order, and an id it
 * did not detect kept as given (with a warning; it gets a job only if it turns up healthy);
 * `none`: none. Without an inventory the list is taken as given (and `all` means none).
 */
export async function resolveGpuDeviceInfo(
  selection: GpuSelection,
  inventory: GpuInventory | undefined,
  warn: (msg: string) => void,
): Promise<GpuDevice[]> {
  if (selection.kind === 'none') return [];
  const asGiven = (id: string): GpuDevice => ({
    index: /^\d+$/.test(id) ? Number(id) : -1,
    uuid: id,
  });
  if (!inventory) {
    if (selection.kind === 'all') warn('GPU_DEVICES=all but no GPU detection here: no GPUs');
    return selection.kind === 'list' ? [...new Set(selection.ids)].map(asGiven) : [];
  }
  const detected = await inventory.detect();
  if (selection.kind === 'all') return detected;
  const out: GpuDevice[] = [];
  const add = (d: GpuDevice) => {
    if (!out.some((o) => o.uuid === d.uuid)) out.push(d);
  };
  for (const id of selection.ids) {
    const lower = id.toLowerCase();
    // A GPU index or GPU UUID names the GPU, or, when it is partitioned, each of its instances.
    const found = /^\d+$/.test(id)
      ? detected.filter((g) => g.index === Number(id))
      : detected.filter((g) => g.uuid.toLowerCase() === lower || g.parent?.toLowerCase() === lower);
    if (found.length === 0) {
      warn(`GPU_DEVICES names ${id}, which nvidia-smi does not list: used as given`);
      add(asGiven(id));
    }
    found.forEach(add);
  }
  return out;
}

/** The UUIDs resolveGpuDeviceInfo gives, for callers that need only the ids. */
export async function resolveGpuDevices(
  selection: GpuSelection,
  inventory: GpuInventory | undefined,
  warn: (msg: string) => void,
): Promise<string[]> {
  return (await resolveGpuDeviceInfo(selection, inventory, warn)).map((d) => d.uuid);
}

const MIB = 1024 * 1024;

/** How a device is named in messages: `MIG-… (3g.40gb, 40448 MiB, GPU 0)`, `GPU-… (H200, …)`. */
export function describeDevice(d: GpuDevice): string {
  const mem =
    d.memoryTotalBytes === undefined ? 'memory unknown' : `${d.memoryTotalBytes / MIB} MiB`;
  if (d.profile) return `${d.uuid} (${d.profile}, ${mem}, GPU ${d.index})`;
  return `${d.uuid} (${d.name ? `${d.name}, ` : ''}${mem})`;
}

/** Whether one device satisfies a request's size (memory and profile; the count aside). */
export function deviceMatches(d: GpuDevice, r: GpuRequest): boolean {
  if (r.migProfile !== undefined && d.profile !== r.migProfile) return false;
  if (r.memoryBytes !== undefined && (d.memoryTotalBytes ?? 0) < r.memoryBytes) return false;
  return true;
}

/** Smaller first; unknown memory last (a job with no size asked keeps big devices free). */
const byMemory = (a: GpuDevice, b: GpuDevice): number => {
  const x = a.memoryTotalBytes ?? Number.MAX_VALUE;
  const y = b.memoryTotalBytes ?? Number.MAX_VALUE;
  return x === y ? 0 : x < y ? -1 : 1;
};

/**
 * Hands out devices to jobs: each device has `slotsPerDevice` slots; a job gets `count` distinct
 * healthy devices that match its size, the least loaded first and, among those, the smallest,
 * or nothing when that many are not free. A device that `isHealthy` rejects gets no new job
 * (its running jobs keep their slot until they end). `update` follows the devices as they
 * change: new ones get jobs at once; one that is gone gets none, and its slots are forgotten
 * once its jobs have released them.
 */
export class GpuAllocator {
  private readonly used = new Map<string, number>();
  private present = new Map<string, GpuDevice>();

  constructor(
    devices: readonly (string | GpuDevice)[],
    private readonly slotsPerDevice: number,
    private readonly isHealthy: (id: string) => boolean = () => true,
  ) {
    this.update(devices.map((d) => (typeof d === 'string' ? { index: -1, uuid: d } : d)));
  }

  /** The devices present now, by UUID (as GPU_DEVICES and detection gave them). */
  get devices(): string[] {
    return [...this.present.keys()];
  }

  /** Slots in all on the present devices (healthy or not): what the GPU queue's concurrency is sized for. */
  get capacity(): number {
    return this.present.size * this.slotsPerDevice;
  }

  /** The present device with this UUID. */
  device(id: string): GpuDevice | undefined {
    return this.present.get(id);
  }

  /** A plain count, or a request with a size. */
  acquire(request: number | GpuRequest): string[] | undefined {
    const r = typeof request === 'number' ? { count: request } : request;
    if (r.count <= 0) return [];
    const load = (d: GpuDevice) => this.used.get(d.uuid) ?? 0;
    const free = [...this.present.values()]
      .filter((d) => load(d) < this.slotsPerDevice && this.isHealthy(d.uuid) && deviceMatches(d, r))
      .sort((a, b) => load(a) - load(b) || byMemory(a, b));
    if (free.length < r.count) return undefined;
    const got = free.slice(0, r.count).map((d) => d.uuid);
    for (const id of got) this.used.set(id, (this.used.get(id) ?? 0) + 1);
    return got;
  }

  /** Gives devices back; safe to call once per acquire on every ending. */
  release(devices: readonly string[]): void {
    for (const id of devices) {
      const n = this.used.get(id);
      if (n === undefined) continue;
      if (n > 1 || this.present.has(id)) this.used.set(id, Math.max(0, n - 1));
      else this.used.delete(id); // gone from the host and no longer held: forgotten
    }
  }

  /** Slots held per device (present ones, and gone ones still held by a job). */
  inUse(): Record<string, number> {
    return Object.fromEntries(this.used);
  }

  /**
   * Why no set of devices on this host could ever satisfy `r`, whatever the load and health
   * (undefined when some could): for a 400 at submit that names what exists.
   */
  refusal(r: GpuRequest): string | undefined {
    const all = [...this.present.values()];
    if (all.filter((d) => deviceMatches(d, r)).length >= r.count) return undefined;
    return `no ${r.count} device(s) on this worker match; it has: ${
      all.map(describeDevice).join(', ') || 'no GPU'
    }`;
  }

  /**
   * Takes the devices present now: new ones get jobs at once; a device no longer listed gets no
   * new job (a running job keeps its slot until it releases it). Returns the devices that were
   * present and are gone.
   */
  update(devices: readonly GpuDevice[]): GpuDevice[] {
    const next = new Map(devices.map((d) => [d.uuid, d] as const));
    const gone = [...this.present.values()].filter((d) => !next.has(d.uuid));
    this.present = next;
    for (const d of devices) if (!this.used.has(d.uuid)) this.used.set(d.uuid, 0);
    for (const d of gone) if (this.used.get(d.uuid) === 0) this.used.delete(d.uuid);
    return gone;
  }
}
