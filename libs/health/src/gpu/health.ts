import type { GpuSelection } from '../../../config/src';
import type { MigInstanceReading } from './mig';
import type { GpuReading } from './nvidia-smi';

/** Why a GPU gets no new job. */
export type GpuProblem =
  | { kind: 'hot'; temperatureC: number; maxTemp: number }
  | { kind: 'ecc'; uncorrected: number }
  | { kind: 'probe'; message: string }
  | { kind: 'lost'; message: string };

export function describeProblem(p: GpuProblem): string {
  switch (p.kind) {
    case 'hot':
      return `temperature ${p.temperatureC} °C ≥ GPU_MAX_TEMP ${p.maxTemp} °C`;
    case 'ecc':
      return `${p.uncorrected} uncorrected ECC error(s) since the driver loaded`;
    case 'probe':
      return `nvidia-smi failed: ${p.message}`;
    case 'lost':
      return p.message;
  }
}

/** Pure: the problems of one reading (empty = healthy). An N/A temperature or ECC is no problem. */
export function gpuProblems(gpu: GpuReading, maxTemp: number): GpuProblem[] {
  const problems: GpuProblem[] = [];
  if (gpu.temperatureC !== undefined && gpu.temperatureC >= maxTemp) {
    problems.push({ kind: 'hot', temperatureC: gpu.temperatureC, maxTemp });
  }
  if (gpu.eccUncorrectedVolatile !== undefined && gpu.eccUncorrectedVolatile > 0) {
    problems.push({ kind: 'ecc', uncorrected: gpu.eccUncorrectedVolatile });
  }
  return problems;
}

/**
 * Problems of one MIG instance: its GPU's (heat, ECC, a failing probe reach every instance of
 * it) and its own uncorrected ECC errors.
 */
export function instanceProblems(
  instance: MigInstanceReading,
  parentProblems: GpuProblem[],
): GpuProblem[] {
  const own = instance.eccUncorrectedVolatile ?? 0;
  return own > 0 ? [...parentProblems, { kind: 'ecc', uncorrected: own }] : [...parentProblems];
}

type Identity = { index: number; uuid: string; mig?: readonly { uuid: string }[] };

const sameId = (id: string, uuid: string) => id.toLowerCase() === uuid.toLowerCase();

/** Whether GPU_DEVICES names the GPU itself (by index or GPU UUID), or `all`. */
function namesGpu(sel: GpuSelection, gpu: { index: number; uuid: string }): boolean {
  switch (sel.kind) {
    case 'all':
      return true;
    case 'none':
      return false;
    case 'list':
      return sel.ids.some((id) =>
        /^\d+$/.test(id) ? Number(id) === gpu.index : sameId(id, gpu.uuid),
      );
  }
}

/**
 * Whether GPU_DEVICES selects this GPU: by index or UUID, or through one of its MIG instances'
 * UUIDs (the GPU is then shown, with only the instances named).
 */
export function isSelected(sel: GpuSelection, gpu: Identity): boolean {
  if (namesGpu(sel, gpu)) return true;
  return (
    sel.kind === 'list' && (gpu.mig ?? []).some((i) => sel.ids.some((id) => sameId(id, i.uuid)))
  );
}

/**
 * Whether GPU_DEVICES selects this MIG instance of `gpu`: `all`, its GPU named (by index or
 * UUID: every instance, as the GPU is partitioned now), or its own `MIG-…` UUID.
 */
export function isInstanceSelected(
  sel: GpuSelection,
  gpu: { index: number; uuid: string },
  instance: { uuid: string },
): boolean {
  return (
    namesGpu(sel, gpu) || (sel.kind === 'list' && sel.ids.some((id) => sameId(id, instance.uuid)))
  );
}

/** Selected ids that match no GPU nor MIG instance nvidia-smi reported: configured ones gone. */
export function missingSelected(sel: GpuSelection, gpus: readonly Identity[]): string[] {
  if (sel.kind !== 'list') return [];
  return sel.ids.filter((id) => !gpus.some((g) => isSelected({ kind: 'list', ids: [id] }, g)));
}
