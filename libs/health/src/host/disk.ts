import { statfs } from 'node:fs/promises';
import type { DiskThreshold } from '../../../config/src';

export interface DiskStatus {
  path: string;
  totalBytes: number;
  /** Bytes an unprivileged process can still write (f_bavail). */
  freeBytes: number;
  freePercent: number;
  /** True when free space is under MIN_FREE_DISK: new jobs get 507. */
  belowThreshold: boolean;
  threshold: DiskThreshold;
}

/** Pure: applies MIN_FREE_DISK to statfs numbers. */
export function diskStatus(
  path: string,
  s: { bsize: number; blocks: number; bavail: number },
  threshold: DiskThreshold,
): DiskStatus {
  const totalBytes = s.blocks * s.bsize;
  const freeBytes = s.bavail * s.bsize;
  const freePercent = totalBytes === 0 ? 0 : (freeBytes / totalBytes) * 100;
  const belowThreshold =
    'percent' in threshold ? freePercent < threshold.percent : freeBytes < threshold.bytes;
  return { path, totalBytes, freeBytes, freePercent, belowThreshold, threshold };
}

/** DATA_FOLDER's free space (asynchronous statfs). Throws if the folder cannot be read. */
export async function probeDisk(path: string, threshold: DiskThreshold): Promise<DiskStatus> {
  return diskStatus(path, await statfs(path), threshold);
}
