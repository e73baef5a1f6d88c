import { readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * This package's folder and package.json: the first one above `from` (apps/cli/src when run
 * from source, dist/apps/cli/src when built) whose name is gpu-sidecar.
 */
function findPackage(from: string): { dir: string; version?: string } | undefined {
  for (let dir = from; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'gpu-sidecar') return { dir, version: pkg.version };
    } catch {
      /* none here */
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** This package's version, or `unknown`. */
export const packageVersion = (from = __dirname): string => findPackage(from)?.version ?? 'unknown';

/** The folder of this package (its units, bin/), or the current folder when none is found. */
export const packageRoot = (from = __dirname): string => findPackage(from)?.dir ?? process.cwd();
