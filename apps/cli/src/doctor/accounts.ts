import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';

/** A user as /etc/passwd and /etc/group list it. */
export interface Account {
  name: string;
  uid: number;
  gid: number;
  /** Every group id: the primary one and the groups that list the user. */
  gids: number[];
}

function table(root: string, file: string): string[][] {
  try {
    return readFileSync(path.join(root, 'etc', file), 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.split(':'));
  } catch {
    return [];
  }
}

/** The group's id by name (or a number given as is); undefined when there is no such group. */
export function groupId(name: string, root = '/'): number | undefined {
  if (/^\d+$/.test(name)) return Number(name);
  const row = table(root, 'group').find((g) => g[0] === name);
  return row ? Number(row[2]) : undefined;
}

/**
 * The user `name` from `root`/etc/passwd (files only: the service users this tool creates live
 * there), with the ids of `extraGroups` added (a unit's SupplementaryGroups=); undefined when
 * there is no such user.
 */
export function lookupUser(
  name: string,
  root = '/',
  extraGroups: string[] = [],
): Account | undefined {
  const row = table(root, 'passwd').find((p) => p[0] === name);
  if (!row) return undefined;
  const uid = Number(row[2]);
  const gid = Number(row[3]);
  const member = table(root, 'group')
    .filter((g) => (g[3] ?? '').split(',').includes(name))
    .map((g) => Number(g[2]));
  const extra = extraGroups
    .map((g) => groupId(g, root))
    .filter((g): g is number => g !== undefined);
  return { name, uid, gid, gids: [...new Set([gid, ...member, ...extra])] };
}

/** This process as an Account (doctor run by hand checks what it itself can do). */
export function currentAccount(): Account {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return {
    name: String(uid),
    uid,
    gid,
    gids: [...new Set([gid, ...(process.getgroups?.() ?? [])])],
  };
}

/** Whether `who` may do `want` (2 write, 4 read, 1 search) on `file` by its owner, group and mode. */
export function mayAccess(who: Account, file: string, want: number): boolean {
  const st = statSync(file);
  if (who.uid === 0) return true;
  if (st.uid === who.uid) return ((st.mode >> 6) & want) === want;
  if (who.gids.includes(st.gid)) return ((st.mode >> 3) & want) === want;
  return (st.mode & want) === want;
}
