import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import path from 'node:path';
import { isatty } from 'node:tty';
import { KeyFileError, readAtMost, readKeyBytes } from '../../../../libs/tunnel/src';

/** What a step did, for the one line install prints per file. */
export type Outcome = 'created' | 'kept' | 'updated' | 'fixed';

/** Owner and mode a path must end up with. */
export interface Want {
  uid: number;
  gid: number;
  mode: number;
}

/** A path install will not use, with why and what to do. */
export class InstallError extends Error {
  override readonly name = 'InstallError';
}

function lstat(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Refuses a symbolic link where install writes. Why it matters: install runs as root and then
 * chowns and chmods what it wrote; a link planted at one of its paths (in a --root folder others
 * can write, or left by an earlier mistake) would make it write the key, or hand ownership of
 * any file, wherever the link points. lstat looks at the link itself, never its target.
 */
function notALink(p: string, st: Stats | undefined): void {
  if (st?.isSymbolicLink())
    throw new InstallError(`${p} is a symbolic link: refusing to write through it (remove it)`);
}

/** Sets owner and mode when they differ; says whether anything changed. */
function settle(p: string, st: Stats, want: Want): boolean {
  let changed = false;
  if (st.uid !== want.uid || st.gid !== want.gid) {
    chownSync(p, want.uid, want.gid);
    changed = true;
  }
  if ((st.mode & 0o7777) !== want.mode) {
    chmodSync(p, want.mode);
    changed = true;
  }
  return changed;
}

/** A folder with this owner and mode: made if missing, its owner and mode set if not as wanted. */
export function ensureDir(p: string, want: Want): Outcome {
  const st = lstat(p);
  notALink(p, st);
  if (!st) {
    mkdirSync(path.dirname(p), { recursive: true });
    mkdirSync(p, { mode: want.mode });
    settle(p, lstatSync(p), want);
    return 'created';
  }
  if (!st.isDirectory()) throw new InstallError(`${p} exists and is not a folder`);
  return settle(p, st, want) ? 'fixed' : 'kept';
}

/**
 * A file with exactly `content`, this owner and mode. `replace` false: an existing file is kept
 * as it is (an admin's edited env file), only its owner and mode are set.
 */
export function ensureFile(p: string, content: string, want: Want, replace: boolean): Outcome {
  const st = lstat(p);
  notALink(p, st);
  if (st && !st.isFile()) throw new InstallError(`${p} exists and is not a regular file`);
  if (st && (!replace || readFileSync(p, 'utf8') === content))
    return settle(p, st, want) ? 'fixed' : 'kept';
  mkdirSync(path.dirname(p), { recursive: true });
  // Written private first, then given its owner and mode: never readable by others meanwhile.
  writeFileSync(p, content, { mode: 0o600 });
  settle(p, lstatSync(p), want);
  return st ? 'updated' : 'created';
}

/**
 * Writes a key file that did not exist: O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600 from the start,
 * then owned by `want`. Why it is safe: O_EXCL fails on any existing name, a dangling link
 * included, so the key is never written through a link or over another file, and no other user
 * can open it between its creation and the chown (it is 0600 and root's until then).
 */
export function writeNewKey(p: string, key: Uint8Array, want: Want): void {
  mkdirSync(path.dirname(p), { recursive: true });
  const fd = openSync(
    p,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    writeFileSync(fd, key);
    const st = fstatSync(fd);
    if (st.uid !== want.uid || st.gid !== want.gid) chownSync(p, want.uid, want.gid);
    chmodSync(p, want.mode);
  } finally {
    closeSync(fd);
  }
}

/**
 * An existing key file, checked as the daemons check it (regular, not a link, nobody but its
 * owner may read it, 32 to 4096 bytes) and given `want`'s owner; returns its bytes. Never
 * loosens its mode. Read as the daemons read it (readKeyBytes: no link followed, a FIFO never
 * waited on, the size checked on the open descriptor before a byte is read, a capped read), so
 * whatever took its place since the lstat costs nothing.
 */
export async function readExistingKey(p: string, want: Want): Promise<Buffer | undefined> {
  const st = lstat(p);
  if (!st) return undefined;
  notALink(p, st);
  if (!st.isFile()) throw new InstallError(`${p} exists and is not a regular file`);
  if ((st.mode & 0o077) !== 0)
    throw new InstallError(
      `${p} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 ${p}, or make a new key`,
    );
  const key = await readKeyBytes(p, { private: false }).catch((err: unknown) => {
    throw err instanceof KeyFileError ? new InstallError(err.message) : err;
  });
  if (key.length < 32)
    throw new InstallError(`${p} holds ${key.length} bytes, a key has 32 or more: remove it`);
  settle(p, st, want);
  return key;
}

/** The link `p` → `target`: made, or repointed when it is a link elsewhere. */
export function ensureLink(p: string, target: string): Outcome {
  const st = lstat(p);
  if (st && !st.isSymbolicLink())
    throw new InstallError(`${p} exists and is not a link: remove it, or put ${target} on PATH`);
  if (st && readlinkSync(p) === target) return 'kept';
  mkdirSync(path.dirname(p), { recursive: true });
  if (st) rmSync(p);
  symlinkSync(target, p);
  return st ? 'updated' : 'created';
}

/** The same one-way fingerprint the daemons log, to compare keys across hosts. */
export { keyFingerprint } from '../../../../libs/tunnel/src';

/** The largest key `install --key` takes (as the daemons: MAX_KEY_FILE_BYTES). */
export const MAX_KEY_BYTES = 4096;

/**
 * The key given to `install --key FILE`: any owner and mode (an admin's copy in their home), a
 * symbolic link followed (the admin named it; what it leads to is checked all the same), but
 * only a regular file of at most MAX_KEY_BYTES by its fstat before a byte is read, opened
 * O_NONBLOCK (a FIFO is refused, never waited on) and read at most MAX_KEY_BYTES + 1 bytes.
 */
export async function readGivenKeyFile(file: string): Promise<Buffer> {
  try {
    return await readKeyBytes(file, { private: false, follow: true });
  } catch (err) {
    throw err instanceof KeyFileError ? new InstallError(`--key: ${err.message}`) : err;
  }
}

/**
 * The key piped to `install --key -`: standard input read to its end, at most MAX_KEY_BYTES + 1
 * bytes (readAtMost: one more says "too long"), so \`< /dev/zero\` or an endless pipe costs
 * 4 KiB. A regular file redirected in is refused by its fstat size before it is read; a
 * terminal is refused at once (the key is piped, never typed). A pipe that never ends waits,
 * as `cat` would: it is the admin's own command (Ctrl-C ends it).
 */
export async function readKeyFromStdin(): Promise<Buffer> {
  const st = fstatSync(0);
  if (isatty(0))
    throw new InstallError(
      '--key -: standard input is a terminal: pipe the key in (ssh GPU-HOST sudo cat /etc/gpu-sidecar/tunnel.key | ...)',
    );
  if (st.isFile() && st.size > MAX_KEY_BYTES)
    throw new InstallError(
      `--key -: standard input is a file of ${st.size} bytes, more than ${MAX_KEY_BYTES}: a key file has 32 (gpu-sidecar keygen)`,
    );
  try {
    return await readAtMost(process.stdin, MAX_KEY_BYTES);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InstallError(`--key -: standard input cannot be read (${code ?? String(err)})`);
  }
}
