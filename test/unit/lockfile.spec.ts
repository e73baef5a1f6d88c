import { readFileSync } from 'node:fs';
import path from 'node:path';

// `npm ci` (the README's first command and CI's install) refuses a lock that lacks any
// package's optional platform build ("Missing: @swc/core-darwin-arm64 ... from lock file"),
// whatever platform runs it. This keeps the lock whole for every platform, not just this one.
interface LockEntry {
  version?: string;
  optionalDependencies?: Record<string, string>;
}
const lock = JSON.parse(
  readFileSync(path.join(__dirname, '..', '..', 'package-lock.json'), 'utf8'),
) as { lockfileVersion: number; packages: Record<string, LockEntry> };

/** Where npm would find `dep` for the package installed at `at` (nested first, then hoisted). */
function resolve(at: string, dep: string): LockEntry | undefined {
  for (let dir = at; ; dir = dir.slice(0, dir.lastIndexOf('/node_modules/'))) {
    const hit = lock.packages[`${dir}/node_modules/${dep}`];
    if (hit) return hit;
    if (!dir.includes('/node_modules/')) return lock.packages[`node_modules/${dep}`];
  }
}

describe('package-lock.json', () => {
  it('is a v3 lock', () => {
    expect(lock.lockfileVersion).toBe(3);
  });

  it('lists every optional platform build of every locked package', () => {
    const missing: string[] = [];
    for (const [at, entry] of Object.entries(lock.packages)) {
      for (const dep of Object.keys(entry.optionalDependencies ?? {})) {
        if (!resolve(at, dep)) missing.push(`${dep} (optional dependency of ${at || 'the root'})`);
      }
    }
    expect(missing).toEqual([]);
  });
});
