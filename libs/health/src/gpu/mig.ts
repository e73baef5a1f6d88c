/**
 * MIG (Multi-Instance GPU) discovery from nvidia-smi's text output: `nvidia-smi -L` names each
 * instance (profile, `Device N`, UUID) under its GPU, `nvidia-smi -q` gives each instance's ids
 * and memory. Both are pure parsers; test/fixtures/nvidia-smi/mig holds real captures of both.
 */

const MIB = 1024 * 1024;

/**
 * A device UUID as the driver prints it (R470 and later): `GPU-` or `MIG-` and hex groups.
 * Why this is strict: the UUID becomes Docker's DeviceIDs and NVIDIA_VISIBLE_DEVICES, where a
 * comma would add a device and `all` would give every GPU; nothing but hex and dashes passes.
 */
export const DEVICE_UUID = /^(GPU|MIG)-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$/;

/** A MIG profile name as nvidia-smi prints it: `3g.40gb`, `1c.3g.71gb`, `1g.10gb+me`. */
export const MIG_PROFILE = /^(\d+c\.)?\d+g\.\d+gb([+-][a-z]+)*$/;

/** One MIG instance of a GPU, as nvidia-smi -L and -q describe it. */
export interface MigInstanceReading {
  /** `MIG-…`: what CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES and Docker's DeviceIDs take. */
  uuid: string;
  /** `Device N` in `nvidia-smi -L` (the "MIG Dev" column): its index on the parent GPU. */
  device: number;
  /** The profile, e.g. `3g.40gb` (`1c.3g.71gb` for one compute instance of a shared GI). */
  profile: string;
  /** GPU instance id (DCGM's GPU_I_ID); compute instances of one GI share it and its memory. */
  gpuInstanceId?: number;
  computeInstanceId?: number;
  multiprocessors?: number;
  memoryTotalBytes?: number;
  memoryUsedBytes?: number;
  memoryFreeBytes?: number;
  /** The instance's own uncorrected (SRAM) ECC errors since the driver loaded. */
  eccUncorrectedVolatile?: number;
}

/** One GPU of `nvidia-smi -L`, with its MIG instances (none on a GPU without MIG). */
export interface ListedGpu {
  index: number;
  uuid: string;
  name: string;
  instances: { uuid: string; device: number; profile: string }[];
}

/**
 * Parses `nvidia-smi -L`. Pure. Lines it does not know (a future driver's addition) are skipped,
 * but a MIG line must sit under a GPU line and carry a well-formed UUID and profile: a reply that
 * names a device it cannot identify is refused (throws) rather than half-read.
 */
export function parseMigList(stdout: string): ListedGpu[] {
  const out: ListedGpu[] = [];
  for (const raw of stdout.split(/\r?\n/)) {
    const line = raw.trimEnd();
    if (line.trim() === '') continue;
    const gpu = /^GPU (\d+): (.*) \(UUID: ([^)]*)\)$/.exec(line);
    if (gpu) {
      if (!DEVICE_UUID.test(gpu[3]) || !gpu[3].startsWith('GPU-'))
        throw new Error(`nvidia-smi -L: bad GPU UUID '${gpu[3]}'`);
      out.push({ index: Number(gpu[1]), name: gpu[2], uuid: gpu[3], instances: [] });
      continue;
    }
    const mig = /^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: ([^)]*)\)$/.exec(line);
    if (!mig) continue;
    const [, profile, device, uuid] = mig;
    const parent = out.at(-1);
    if (!parent) throw new Error(`nvidia-smi -L: MIG device before any GPU: '${line}'`);
    if (!DEVICE_UUID.test(uuid) || !uuid.startsWith('MIG-'))
      throw new Error(`nvidia-smi -L: bad MIG UUID '${uuid}'`);
    if (!MIG_PROFILE.test(profile)) throw new Error(`nvidia-smi -L: bad MIG profile '${profile}'`);
    parent.instances.push({ uuid, device: Number(device), profile });
  }
  return out;
}

/** One `key : value` or section line of `nvidia-smi -q`, with what is indented under it. */
interface QNode {
  key: string;
  value?: string;
  children: QNode[];
}

/** `nvidia-smi -q` as a tree by indentation (pure; every line is `key : value` or a section). */
function parseTree(stdout: string): QNode[] {
  const root: QNode = { key: '', children: [] };
  const stack: { indent: number; node: QNode }[] = [{ indent: -1, node: root }];
  for (const raw of stdout.split(/\r?\n/)) {
    if (raw.trim() === '' || raw.startsWith('=')) continue;
    const indent = raw.length - raw.trimStart().length;
    // A key has no colon; the value may have some (`Bus Id : 00000000:00:09.0`).
    const kv = /^([^:]*?)\s+:(?: (.*))?$/.exec(raw.trim());
    const node: QNode = kv
      ? { key: kv[1], value: (kv[2] ?? '').trim(), children: [] }
      : { key: raw.trim(), children: [] };
    while (stack.length > 1 && stack[stack.length - 1].indent >= indent) stack.pop();
    stack[stack.length - 1].node.children.push(node);
    stack.push({ indent, node });
  }
  return root.children;
}

const child = (n: QNode | undefined, key: string) => n?.children.find((c) => c.key === key);

/** `40448 MiB` → bytes; `0` → 0; N/A or anything else → undefined. */
function mibValue(v: string | undefined): number | undefined {
  const m = /^(\d+) MiB$/.exec(v ?? '');
  return m ? Number(m[1]) * MIB : undefined;
}

function intValue(v: string | undefined): number | undefined {
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/** What `nvidia-smi -q` says of one MIG device (by its index on the GPU). */
export type MigDetails = Omit<MigInstanceReading, 'uuid' | 'profile'>;

/**
 * Parses `nvidia-smi -q`: for each GPU (by its `GPU UUID`), the `MIG Device` sections, by index.
 * Pure. Reads both drivers' names for an instance's memory: `Shared FB Memory Usage` (590) and
 * `FB Memory Usage` (580). An instance whose memory reads N/A keeps no memory fields.
 */
export function parseMigDetails(stdout: string): Map<string, MigDetails[]> {
  const out = new Map<string, MigDetails[]>();
  for (const gpu of parseTree(stdout)) {
    if (!/^GPU [0-9A-Fa-f:.]+$/.test(gpu.key)) continue;
    const uuid = child(gpu, 'GPU UUID')?.value;
    if (!uuid) continue;
    const devices: MigDetails[] = [];
    for (const d of gpu.children.filter((c) => c.key === 'MIG Device')) {
      const device = intValue(child(d, 'Index')?.value);
      if (device === undefined) continue;
      const fb = child(d, 'Shared FB Memory Usage') ?? child(d, 'FB Memory Usage');
      const sram = child(child(child(d, 'ECC Errors'), 'Volatile'), 'SRAM Uncorrectable');
      const sms = child(child(child(d, 'Device Attributes'), 'Shared'), 'Multiprocessor count');
      devices.push(
        compact({
          device,
          gpuInstanceId: intValue(child(d, 'GPU Instance ID')?.value),
          computeInstanceId: intValue(child(d, 'Compute Instance ID')?.value),
          multiprocessors: intValue(sms?.value),
          memoryTotalBytes: mibValue(child(fb, 'Total')?.value),
          memoryUsedBytes: mibValue(child(fb, 'Used')?.value),
          memoryFreeBytes: mibValue(child(fb, 'Free')?.value),
          eccUncorrectedVolatile: intValue(sram?.value),
        }),
      );
    }
    out.set(uuid.toLowerCase(), devices);
  }
  return out;
}

/**
 * The instances of one MIG-enabled GPU: `-L` names them (UUID, profile), `-q` adds ids and
 * memory, matched by the device index. An instance `-q` does not describe keeps only its name.
 */
export function joinMig(
  listed: ListedGpu,
  details: Map<string, MigDetails[]>,
): MigInstanceReading[] {
  const mine = details.get(listed.uuid.toLowerCase()) ?? [];
  return listed.instances.map((i) => ({
    ...mine.find((d) => d.device === i.device),
    uuid: i.uuid,
    device: i.device,
    profile: i.profile,
  }));
}

/** Drops the keys whose value is undefined, so "absent" really is absent (toEqual, `in`). */
function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}
