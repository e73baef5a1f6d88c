import type { GpuSelection } from '../../../config/src/parse';
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

/** Whether GPU_DEVICES selects this GPU (by index or UUID). */
export function isSelected(sel: GpuSelection, gpu: { index: number; uuid: string }): boolean {
  switch (sel.kind) {
    case 'all':
      return true;
    case 'none':
      return false;
    case 'list':
      return sel.ids.some((id) =>
        /^\d+$/.test(id) ? Number(id) === gpu.index : id.toLowerCase() === gpu.uuid.toLowerCase(),
      );
  }
}

/** Selected ids that match no GPU nvidia-smi reported: configured GPUs that are gone. */
export function missingSelected(
  sel: GpuSelection,
  gpus: readonly { index: number; uuid: string }[],
): string[] {
  if (sel.kind !== 'list') return [];
  return sel.ids.filter((id) => !gpus.some((g) => isSelected({ kind: 'list', ids: [id] }, g)));
}
