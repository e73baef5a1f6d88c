import { hostname } from 'node:os';
import {
  defineGpuMetrics,
  type Gauge,
  type GpuMetricDefs,
  type Registry,
} from '../../../metrics/src';
import type { GpuSnapshot, MigInstanceStatus } from './sampler';

const MIB = 1024 * 1024;

type LabelValues<L extends string> = Partial<Record<L, string | number>>;
type GpuId = { gpu: string; UUID: string; modelName: string };
/** A MIG instance's series: DCGM's labels (its GPU's ids, GPU_I_*) and its own `uuid`. */
type MigId = GpuId & { GPU_I_PROFILE: string; GPU_I_ID?: string; uuid: string };

const mib = (b?: number) => (b === undefined ? undefined : b / MIB);

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
