import { readFileSync } from 'node:fs';

let cached: number | null | undefined;

/**
 * This process's soft limit on open descriptors (RLIMIT_NOFILE), from /proc/self/limits; null
 * where that cannot be read (not Linux). Node has no call for it, and the limit decides how
 * many connections a listener may hold before every accept (and every file open) fails with
 * EMFILE: systemd's default soft limit is 1,024 unless a unit sets LimitNOFILE=.
 */
export function openFileLimit(): number | null {
  if (cached !== undefined) return cached;
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    cached = soft === undefined || soft === 'unlimited' ? null : Number(soft) || null;
  } catch {
    cached = null;
  }
  return cached;
}

/**
 * `wanted`, or less when the descriptor limit would not leave room for it: at most `share` of
 * the soft limit (connections, one descriptor each, are not all a daemon opens).
 */
export function withinFileLimit(wanted: number, share: number): number {
  const limit = openFileLimit();
  return limit === null ? wanted : Math.max(1, Math.min(wanted, Math.floor(limit * share)));
}
