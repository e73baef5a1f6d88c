import { execFile } from 'node:child_process';
import {
  DEVICE_UUID,
  joinMig,
  parseMigDetails,
  parseMigList,
  type MigInstanceReading,
} from './mig';

/**
 * The fields we ask nvidia-smi for, in order. Index and UUID first: they are the identity that
 * nvidia-smi, Docker's DeviceIDs and CUDA agree on (with CUDA_DEVICE_ORDER=PCI_BUS_ID).
 * test/fixtures/nvidia-smi/query.txt keeps a copy of the exact command line; the fakes refuse any
 * other, so a change here must change the fixtures too.
 */
export const GPU_QUERY_FIELDS = [
  'index',
  'uuid',
  'name',
  'pci.bus_id',
  'driver_version',
  'temperature.gpu',
  'utilization.gpu',
  'utilization.memory',
  'memory.total',
  'memory.used',
  'memory.free',
  'power.draw',
  'power.limit',
  'clocks.gr',
  'clocks.mem',
  'ecc.errors.uncorrected.volatile.total',
  'fan.speed',
  'mig.mode.current',
] as const;

export const NVIDIA_SMI_ARGS: readonly string[] = [
  `--query-gpu=${GPU_QUERY_FIELDS.join(',')}`,
  '--format=csv,noheader,nounits',
];

const MIB = 1024 * 1024;

/** One GPU as nvidia-smi reported it. A field nvidia-smi gave as N/A is absent, never 0. */
export interface GpuReading {
  index: number;
  uuid: string;
  name: string;
  pciBusId: string;
  driverVersion?: string;
  /** °C */
  temperatureC?: number;
  /** 0-100 */
  utilizationGpuPercent?: number;
  /** 0-100 */
  utilizationMemoryPercent?: number;
  memoryTotalBytes?: number;
  memoryUsedBytes?: number;
  memoryFreeBytes?: number;
  powerDrawW?: number;
  powerLimitW?: number;
  clockGraphicsMHz?: number;
  clockMemoryMHz?: number;
  eccUncorrectedVolatile?: number;
  /** 0-100 */
  fanSpeedPercent?: number;
  /** `mig.mode.current`: true when MIG is enabled; absent where the GPU has no MIG (N/A). */
  migEnabled?: boolean;
  /**
   * With MIG enabled: its instances (from `nvidia-smi -L` and `-q`), each a device of its own;
   * the GPU itself is then no device (CUDA and the container runtime refuse the whole GPU).
   */
  mig?: MigInstanceReading[];
}

/** nvidia-smi's ways to say "no value": `[N/A]`, `N/A`, `[Not Supported]`, `[Unknown Error]`... */
function absent(raw: string): boolean {
  return raw === '' || raw === 'N/A' || /^\[.*\]$/.test(raw);
}

function num(raw: string, field: string): number | undefined {
  if (absent(raw)) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`nvidia-smi gave '${raw}' for ${field}, not a number`);
  return n;
}

/** `Enabled`/`Disabled`; N/A (a GPU without MIG) is absent. */
function migMode(raw: string): boolean | undefined {
  if (absent(raw)) return undefined;
  if (raw === 'Enabled' || raw === 'Disabled') return raw === 'Enabled';
  throw new Error(`nvidia-smi gave '${raw}' for mig.mode.current, not Enabled or Disabled`);
}

function str(raw: string): string | undefined {
  return absent(raw) ? undefined : raw;
}

const mib = (n: number | undefined) => (n === undefined ? undefined : n * MIB);

/** Drops the keys whose value is undefined, so "absent" really is absent (toEqual, `in`). */
function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/**
 * Parses `--format=csv,noheader,nounits` output for GPU_QUERY_FIELDS. Pure. Throws on a line
 * with the wrong number of fields, or without index/UUID (a reply we cannot trust).
 */
export function parseNvidiaSmi(stdout: string): GpuReading[] {
  const out: GpuReading[] = [];
  for (const line of stdout.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const f = line.split(',').map((s) => s.trim());
    if (f.length !== GPU_QUERY_FIELDS.length) {
      throw new Error(
        `nvidia-smi line has ${f.length} fields, expected ${GPU_QUERY_FIELDS.length}: '${line}'`,
      );
    }
    const index = num(f[0], 'index');
    const uuid = str(f[1]);
    if (index === undefined || uuid === undefined) {
      throw new Error(`nvidia-smi line lacks index or uuid: '${line}'`);
    }
    // The UUID becomes a job's DeviceIDs and NVIDIA_VISIBLE_DEVICES, where `all` or `none`
    // would give it every GPU or none: only the driver's exact `GPU-` shape is taken.
    if (!DEVICE_UUID.test(uuid) || !uuid.startsWith('GPU-')) {
      throw new Error(`nvidia-smi gave '${uuid}' as a GPU UUID, not GPU-xxxxxxxx-xxxx-…`);
    }
    out.push(
      compact<GpuReading>({
        index,
        uuid,
        name: str(f[2]) ?? 'unknown',
        pciBusId: str(f[3]) ?? '',
        driverVersion: str(f[4]),
        temperatureC: num(f[5], 'temperature.gpu'),
        utilizationGpuPercent: num(f[6], 'utilization.gpu'),
        utilizationMemoryPercent: num(f[7], 'utilization.memory'),
        memoryTotalBytes: mib(num(f[8], 'memory.total')),
        memoryUsedBytes: mib(num(f[9], 'memory.used')),
        memoryFreeBytes: mib(num(f[10], 'memory.free')),
        powerDrawW: num(f[11], 'power.draw'),
        powerLimitW: num(f[12], 'power.limit'),
        clockGraphicsMHz: num(f[13], 'clocks.gr'),
        clockMemoryMHz: num(f[14], 'clocks.mem'),
        eccUncorrectedVolatile: num(f[15], 'ecc.errors.uncorrected.volatile.total'),
        fanSpeedPercent: num(f[16], 'fan.speed'),
        migEnabled: migMode(f[17]),
      }),
    );
  }
  return out;
}

/** Why a query failed: the `reason` label of gpu_probe_errors_total. */
export type GpuProbeErrorReason = 'missing' | 'exit' | 'timeout' | 'parse' | 'spawn';

export type NvidiaSmiResult =
  | { ok: true; gpus: GpuReading[]; durationMs: number }
  | { ok: false; reason: GpuProbeErrorReason; message: string; durationMs: number };

export interface NvidiaSmiOptions {
  /** Program to run; default `nvidia-smi` from PATH. */
  command?: string;
  /** Kill nvidia-smi after this long (it hangs when the driver does); default 10 s. */
  timeoutMs?: number;
  /** Environment; default process.env. CUDA_DEVICE_ORDER=PCI_BUS_ID is always set. */
  env?: NodeJS.ProcessEnv;
}

/** Runs one query, asynchronously (execFile): the event loop never waits on nvidia-smi. */
export type GpuQuery = () => Promise<NvidiaSmiResult>;

type Run =
  { ok: true; stdout: string } | { ok: false; reason: GpuProbeErrorReason; message: string };

/** One nvidia-smi call with `args`, killed past `timeout`; its failure said the way /health shows it. */
function runNvidiaSmi(
  command: string,
  args: readonly string[],
  o: { timeout: number; env: NodeJS.ProcessEnv; maxBuffer: number },
): Promise<Run> {
  return new Promise<Run>((resolve) => {
    execFile(
      command,
      [...args],
      {
        timeout: o.timeout,
        killSignal: 'SIGKILL',
        env: o.env,
        encoding: 'utf8',
        maxBuffer: o.maxBuffer,
      },
      (err, stdout, stderr) => {
        if (!err) return resolve({ ok: true, stdout: String(stdout) });
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: unknown };
        const said = `${String(stdout).trim()} ${String(stderr).trim()}`.trim();
        const call = args.length === 1 ? `${command} ${args[0]}` : command;
        if (e.code === 'ENOENT') {
          const message = `${command} not found on PATH (no NVIDIA driver installed?)`;
          return resolve({ ok: false, reason: 'missing', message });
        }
        if (e.killed) {
          const message = `${call} did not answer within ${o.timeout} ms`;
          return resolve({ ok: false, reason: 'timeout', message });
        }
        if (typeof e.code === 'number') {
          const message = `${call} exited ${e.code}${said ? `: ${said}` : ''}`;
          return resolve({ ok: false, reason: 'exit', message });
        }
        resolve({ ok: false, reason: 'spawn', message: e.message });
      },
    );
  });
}

/**
 * The query as a function: `--query-gpu` first; only when some GPU has MIG enabled, then
 * `nvidia-smi -L` (instance UUIDs and profiles) and `-q` (their ids and memory), side by side.
 * A host without MIG pays for one call per sample, as before. Any call failing fails the sample:
 * a MIG host whose instances cannot be listed must not look like one with none.
 */
export function nvidiaSmiQuery(opts: NvidiaSmiOptions = {}): GpuQuery {
  const command = opts.command ?? 'nvidia-smi';
  const timeout = opts.timeoutMs ?? 10_000;
  return async () => {
    const started = performance.now();
    const env = { ...(opts.env ?? process.env), CUDA_DEVICE_ORDER: 'PCI_BUS_ID' };
    const fail = (r: { reason: GpuProbeErrorReason; message: string }): NvidiaSmiResult => ({
      ok: false,
      reason: r.reason,
      message: r.message,
      durationMs: performance.now() - started,
    });
    const query = await runNvidiaSmi(command, NVIDIA_SMI_ARGS, { timeout, env, maxBuffer: MIB });
    if (!query.ok) return fail(query);
    try {
      const gpus = parseNvidiaSmi(query.stdout);
      if (gpus.some((g) => g.migEnabled)) {
        // -q of a host with 8 MIG GPUs is a few hundred KiB; 16 MiB leaves room for any host.
        const big = { timeout, env, maxBuffer: 16 * MIB };
        const [list, details] = await Promise.all([
          runNvidiaSmi(command, ['-L'], big),
          runNvidiaSmi(command, ['-q'], big),
        ]);
        if (!list.ok) return fail(list);
        if (!details.ok) return fail(details);
        attachMig(gpus, list.stdout, details.stdout);
      }
      return { ok: true, gpus, durationMs: performance.now() - started };
    } catch (parseErr) {
      return fail({ reason: 'parse', message: (parseErr as Error).message });
    }
  };
}

/** Gives each MIG-enabled GPU its instances from `-L` and `-q` (matched by GPU UUID). Pure. */
export function attachMig(gpus: GpuReading[], listOut: string, detailsOut: string): void {
  const listed = parseMigList(listOut);
  const details = parseMigDetails(detailsOut);
  for (const g of gpus) {
    if (!g.migEnabled) continue;
    const l = listed.find((x) => x.uuid.toLowerCase() === g.uuid.toLowerCase());
    // MIG on, no instance created yet (or all destroyed): no device on this GPU.
    g.mig = l ? joinMig(l, details) : [];
  }
}
