import { readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * This package's version, from its package.json: the first one above this file (apps/cli/src
 * when run from source, dist/apps/cli/src when built) whose name is gpu-sidecar.
 */
export function packageVersion(from = __dirname): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'gpu-sidecar' && pkg.version) return pkg.version;
    } catch {
      /* none here */
    }
    if (path.dirname(dir) === dir) return 'unknown';
  }
}
