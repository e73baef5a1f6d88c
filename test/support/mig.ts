import { renameSync, symlinkSync } from 'node:fs';
import path from 'node:path';

/**
 * The fake nvidia-smi that replays real MIG hosts (test/fixtures/nvidia-smi/mig, its README):
 * put MIG_SMI_DIR first on PATH and point NVIDIA_SMI_FIXTURE at a layout link.
 */
export const MIG_SMI_DIR = path.join(__dirname, '..', 'fixtures', 'nvidia-smi', 'mig');
/** The captures' GPUs (their collector masks every UUID; the second one renumbered). */
export const GPU0 = 'GPU-00000000-0000-0000-0000-000000000000';
export const GPU1 = 'GPU-00000001-0000-0000-0000-000000000001';
/** The masked MIG UUIDs of the captures, by instance. */
export const mig = (n: number) => `MIG-0000000${n}-0000-0000-0000-00000000000${n}`;
/** The unmasked 3g.71gb instance of the h200-580 capture. */
export const NEW_3G = 'MIG-f165f0ad-bde2-5b72-acdf-73bbf48eeb2c';

/**
 * A link at `link` to `target` (a layout folder, or any folder of replies), re-pointed
 * atomically (rename over it), so a running nvidia-smi reads the old layout or the new one,
 * never none: how a test re-partitions a GPU under a running worker.
 */
export function pointLayout(link: string, target: string): void {
  symlinkSync(target, `${link}.new`);
  renameSync(`${link}.new`, link);
}

/** `pointLayout` to one of the captures in MIG_SMI_DIR by name. */
export const pointCapture = (link: string, layout: string): void =>
  pointLayout(link, path.join(MIG_SMI_DIR, layout));
