import { hostname } from 'node:os';
import { Counter, Gauge, type Registry } from '../../../metrics/src';
import type { GpuSnapshot, MigInstanceStatus } from './sampler';

const MIB = 1024 * 1024;

type LabelValues<L extends string> = Partial<Record<L, string | number>>;
type GpuId = { gpu: string; UUID: string; modelName: string };
/** A MIG instance's series: DCGM's labels (its GPU's ids, GPU_I_*) and its own `uuid`. */
type MigId = GpuId & { GPU_I_PROFILE: string; GPU_I_ID?: string; uuid: string };

const mib = (b?: number) => (b === undefined ? undefined : b / MIB);

/**
 * GPU metric names users already know: DCGM exporter and utkuozdemir/nvidia_gpu_exporter, so
 * existing Grafana dashboards and alert habits carry over. Units follow the exporter each name
 * comes from (DCGM framebuffer in MiB, the nvidia_smi_* family in bytes and ratios).
 *
 * Not exported: DCGM_FI_DEV_XID_ERRORS. XID errors come from the kernel log / NVML events, and
 * `nvidia-smi --query-gpu` has no field for them, so we do not publish a value we cannot read.
 */
const METRIC = {
  // DCGM exporter family: labels gpu (index), UUID, modelName, Hostname.
  DCGM_GPU_UTIL: 'DCGM_FI_DEV_GPU_UTIL',
  DCGM_FB_USED: 'DCGM_FI_DEV_FB_USED',
  DCGM_FB_FREE: 'DCGM_FI_DEV_FB_FREE',
  DCGM_GPU_TEMP: 'DCGM_FI_DEV_GPU_TEMP',
  DCGM_POWER_USAGE: 'DCGM_FI_DEV_POWER_USAGE',
  // nvidia_gpu_exporter family: label uuid.
  NVSMI_UTILIZATION_GPU_RATIO: 'nvidia_smi_utilization_gpu_ratio',
  NVSMI_MEMORY_USED_BYTES: 'nvidia_smi_memory_used_bytes',
  NVSMI_MEMORY_TOTAL_BYTES: 'nvidia_smi_memory_total_bytes',
  NVSMI_TEMPERATURE_GPU: 'nvidia_smi_temperature_gpu',
  NVSMI_POWER_DRAW_WATTS: 'nvidia_smi_power_draw_watts',
  // Ours.
  GPU_HEALTHY: 'gpu_healthy',
  GPU_PROBE_ERRORS: 'gpu_probe_errors_total',
  GPU_PROBE_UP: 'gpu_probe_up',
  GPU_DEVICES_SEEN: 'gpu_devices',
  GPU_DEVICES_MISSING: 'gpu_devices_missing',
  GPU_MAX_TEMP: 'gpu_max_temperature_celsius',
} as const;

export const DCGM_LABELS = ['gpu', 'UUID', 'modelName', 'Hostname'] as const;
/**
 * DCGM exporter's labels of a MIG instance's series, beside the four above (which then name the
 * instance's GPU: `UUID` is the GPU's, not the instance's): its profile and GPU instance id.
 */
export const DCGM_MIG_LABELS = ['GPU_I_PROFILE', 'GPU_I_ID'] as const;
export type DcgmLabel = (typeof DCGM_LABELS)[number] | (typeof DCGM_MIG_LABELS)[number];

/** The GPU gauges and counters, registered on one registry. */
export interface GpuMetricDefs {
  dcgmUtil: Gauge<DcgmLabel>;
  dcgmFbUsed: Gauge<DcgmLabel>;
  dcgmFbFree: Gauge<DcgmLabel>;
  dcgmTemp: Gauge<DcgmLabel>;
  dcgmPower: Gauge<DcgmLabel>;
  smiUtilRatio: Gauge<'uuid'>;
  smiMemUsed: Gauge<'uuid'>;
  smiMemTotal: Gauge<'uuid'>;
  smiTemp: Gauge<'uuid'>;
  smiPower: Gauge<'uuid'>;
  healthy: Gauge<'gpu' | 'uuid' | (typeof DCGM_MIG_LABELS)[number]>;
  probeErrors: Counter<'reason'>;
  probeUp: Gauge<string>;
  seen: Gauge<string>;
  missing: Gauge<string>;
  maxTemp: Gauge<string>;
}

export function defineGpuMetrics(registry: Registry): GpuMetricDefs {
  const registers = [registry];
  const dcgm = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: [...DCGM_LABELS, ...DCGM_MIG_LABELS], registers });
  const smi = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: ['uuid'] as const, registers });
  return {
    dcgmUtil: dcgm(METRIC.DCGM_GPU_UTIL, 'GPU utilization (in %).'),
    dcgmFbUsed: dcgm(METRIC.DCGM_FB_USED, 'Framebuffer memory used (in MiB).'),
    dcgmFbFree: dcgm(METRIC.DCGM_FB_FREE, 'Framebuffer memory free (in MiB).'),
    dcgmTemp: dcgm(METRIC.DCGM_GPU_TEMP, 'GPU temperature (in C).'),
    dcgmPower: dcgm(METRIC.DCGM_POWER_USAGE, 'Power draw (in W).'),
    smiUtilRatio: smi(METRIC.NVSMI_UTILIZATION_GPU_RATIO, 'utilization.gpu [%] as a ratio 0-1'),
    smiMemUsed: smi(METRIC.NVSMI_MEMORY_USED_BYTES, 'memory.used [MiB] in bytes'),
    smiMemTotal: smi(METRIC.NVSMI_MEMORY_TOTAL_BYTES, 'memory.total [MiB] in bytes'),
    smiTemp: smi(METRIC.NVSMI_TEMPERATURE_GPU, 'temperature.gpu (C)'),
    smiPower: smi(METRIC.NVSMI_POWER_DRAW_WATTS, 'power.draw [W]'),
    healthy: new Gauge({
      name: METRIC.GPU_HEALTHY,
      help:
        '1 when the GPU (or MIG instance: uuid MIG-..., with GPU_I_*) may get new jobs ' +
        '(not hot, no uncorrected ECC errors, seen by nvidia-smi)',
      labelNames: ['gpu', 'uuid', ...DCGM_MIG_LABELS] as const,
      registers,
    }),
    probeErrors: new Counter({
      name: METRIC.GPU_PROBE_ERRORS,
      help: 'nvidia-smi queries that failed, by reason (missing, exit, timeout, parse, spawn)',
      labelNames: ['reason'] as const,
      registers,
    }),
    probeUp: new Gauge({
      name: METRIC.GPU_PROBE_UP,
      help: '1 when the last nvidia-smi query succeeded',
      registers,
    }),
    seen: new Gauge({
      name: METRIC.GPU_DEVICES_SEEN,
      help: 'GPUs selected by GPU_DEVICES that the last good nvidia-smi query reported',
      registers,
    }),
    missing: new Gauge({
      name: METRIC.GPU_DEVICES_MISSING,
      help: 'GPU_DEVICES entries that nvidia-smi no longer reports (a lost GPU)',
      registers,
    }),
    maxTemp: new Gauge({
      name: METRIC.GPU_MAX_TEMP,
      help: 'GPU_MAX_TEMP: at this temperature a GPU gets no new job',
      registers,
    }),
  };
}

/**
 * Writes GPU snapshots into Prometheus gauges. A field that nvidia-smi gave as N/A has no sample
 * (its label set is removed), never 0. While the probe fails, the value gauges are emptied (no
 * frozen numbers) and gpu_healthy is 0 for every GPU last seen. A MIG instance gets DCGM's
 * framebuffer series with its GPU's labels plus GPU_I_PROFILE and GPU_I_ID (as DCGM exporter
 * labels them), the nvidia_smi_memory_* pair under its own `MIG-…` uuid, and gpu_healthy; its
 * temperature and power are its GPU's series.
 */
export class GpuMetrics {
  readonly defs: GpuMetricDefs;
  private readonly host: string;
  private known = new Map<string, GpuId>();
  private knownMig = new Map<string, MigId>();

  constructor(registry: Registry, opts: { hostname?: string; maxTemp?: number } = {}) {
    this.defs = defineGpuMetrics(registry);
    this.host = opts.hostname ?? hostname();
    if (opts.maxTemp !== undefined) this.defs.maxTemp.set(opts.maxTemp);
  }

  /** Counts one failed query (gpu_probe_errors_total{reason}). */
  probeError(reason: string): void {
    this.defs.probeErrors.inc({ reason });
  }

  record(snap: GpuSnapshot): void {
    const d = this.defs;
    if (snap.error) this.probeError(snap.error.reason);
    d.probeUp.set(snap.stale && snap.error ? 0 : 1);
    if (!snap.stale) {
      d.seen.set(snap.gpus.length);
      d.missing.set(snap.missing.length);
    }
    const fresh = !snap.stale;
    const put = <L extends string>(gauge: Gauge<L>, labels: LabelValues<L>, v?: number) =>
      fresh && v !== undefined ? gauge.set(labels, v) : gauge.remove(labels);
    const seen = new Set<string>();
    const seenMig = new Set<string>();
    for (const g of snap.gpus) {
      const id = { gpu: String(g.index), UUID: g.uuid, modelName: g.name };
      const dcgm = { ...id, Hostname: this.host };
      const smi = { uuid: g.uuid };
      seen.add(g.uuid);
      const prev = this.known.get(g.uuid);
      if (prev && (prev.gpu !== id.gpu || prev.modelName !== id.modelName)) this.forget(g.uuid);
      this.known.set(g.uuid, id);
      d.healthy.set({ gpu: id.gpu, uuid: g.uuid }, g.healthy ? 1 : 0);
      put(d.dcgmUtil, dcgm, g.utilizationGpuPercent);
      put(d.dcgmFbUsed, dcgm, mib(g.memoryUsedBytes));
      put(d.dcgmFbFree, dcgm, mib(g.memoryFreeBytes));
      put(d.dcgmTemp, dcgm, g.temperatureC);
      put(d.dcgmPower, dcgm, g.powerDrawW);
      const ratio =
        g.utilizationGpuPercent === undefined ? undefined : g.utilizationGpuPercent / 100;
      put(d.smiUtilRatio, smi, ratio);
      put(d.smiMemUsed, smi, g.memoryUsedBytes);
      put(d.smiMemTotal, smi, g.memoryTotalBytes);
      put(d.smiTemp, smi, g.temperatureC);
      put(d.smiPower, smi, g.powerDrawW);
      for (const i of g.mig ?? []) {
        seenMig.add(i.uuid);
        this.recordInstance(i, id, put);
      }
    }
    for (const uuid of [...this.known.keys()]) if (!seen.has(uuid)) this.forget(uuid);
    for (const uuid of [...this.knownMig.keys()]) if (!seenMig.has(uuid)) this.forgetMig(uuid);
  }

  private recordInstance(
    i: MigInstanceStatus,
    gpuId: GpuId,
    put: <L extends string>(gauge: Gauge<L>, labels: LabelValues<L>, v?: number) => void,
  ): void {
    const d = this.defs;
    const id: MigId = {
      ...gpuId,
      GPU_I_PROFILE: i.profile,
      ...(i.gpuInstanceId !== undefined ? { GPU_I_ID: String(i.gpuInstanceId) } : {}),
      uuid: i.uuid,
    };
    const prev = this.knownMig.get(i.uuid);
    if (prev && JSON.stringify(prev) !== JSON.stringify(id)) this.forgetMig(i.uuid);
    this.knownMig.set(i.uuid, id);
    const { uuid, ...dcgmId } = id;
    d.healthy.set(this.healthyLabels(id), i.healthy ? 1 : 0);
    // Without a GPU instance id two instances of one profile would share DCGM's label set.
    if (id.GPU_I_ID !== undefined) {
      const dcgm = { ...dcgmId, Hostname: this.host };
      put(d.dcgmFbUsed, dcgm, mib(i.memoryUsedBytes));
      put(d.dcgmFbFree, dcgm, mib(i.memoryFreeBytes));
    }
    put(d.smiMemUsed, { uuid }, i.memoryUsedBytes);
    put(d.smiMemTotal, { uuid }, i.memoryTotalBytes);
  }

  private healthyLabels(id: MigId) {
    return {
      gpu: id.gpu,
      uuid: id.uuid,
      GPU_I_PROFILE: id.GPU_I_PROFILE,
      ...(id.GPU_I_ID !== undefined ? { GPU_I_ID: id.GPU_I_ID } : {}),
    };
  }

  private forget(uuid: string): void {
    const id = this.known.get(uuid);
    if (!id) return;
    const d = this.defs;
    const dcgm = { ...id, Hostname: this.host };
    for (const g of [d.dcgmUtil, d.dcgmFbUsed, d.dcgmFbFree, d.dcgmTemp, d.dcgmPower])
      g.remove(dcgm);
    for (const g of [d.smiUtilRatio, d.smiMemUsed, d.smiMemTotal, d.smiTemp, d.smiPower]) {
      g.remove({ uuid });
    }
    d.healthy.remove({ gpu: id.gpu, uuid });
    this.known.delete(uuid);
  }

  private forgetMig(uuid: string): void {
    const id = this.knownMig.get(uuid);
    if (!id) return;
    const d = this.defs;
    const { uuid: _u, ...dcgmId } = id;
    if (id.GPU_I_ID !== undefined) {
      for (const g of [d.dcgmFbUsed, d.dcgmFbFree]) g.remove({ ...dcgmId, Hostname: this.host });
    }
    for (const g of [d.smiMemUsed, d.smiMemTotal]) g.remove({ uuid });
    d.healthy.remove(this.healthyLabels(id));
    this.knownMig.delete(uuid);
  }
}
