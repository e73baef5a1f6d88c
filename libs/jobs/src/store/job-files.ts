import { randomBytes } from 'node:crypto';
import { constants as fsc, type Dir, type Stats } from 'node:fs';
import {
  chmod,
  lstat,
  open,
  opendir,
  readlink,
  rename,
  rmdir,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import path from 'node:path';

/**
 * Reading, walking and removing what a job wrote, without ever being led elsewhere by it.
 *
 * A job owns its output/ folder and may change it while the daemon reads it: swap a file for a
 * symbolic link to /etc/shadow, a folder for a link to /, a file for a FIFO (whose open() blocks
 * a libuv thread until a writer comes) or a device. Checking a path and then opening it by name
 * loses that race. Everything here instead opens first and then checks what was opened:
 *
 * - files are opened with O_PATH | O_NOFOLLOW: that open follows no link in the last component
 *   and never reaches a driver or a FIFO (no blocking, no side effect such as a device's open);
 * - the descriptor is then checked: fstat says it is a regular file, and the kernel's own name for
 *   it (readlink of /proc/self/fd/N) is exactly the expected path under the real job folder, so a
 *   link anywhere on the way (a folder swapped for a link) is refused;
 * - only then is the same inode reopened for reading through /proc/self/fd/N (the kernel follows
 *   that magic link to the very inode, not to a name), O_NONBLOCK, and checked again by fstat.
 * - folders are walked through descriptors: each entry is reached as /proc/self/fd/<dir>/<name>,
 *   whose only name the job can still change is the last one, which is never followed.
 *
 * Linux only (O_PATH, /proc); the worker runs on Linux GPU hosts.
 */

/** Why a requested path is refused; the API answers 400. */
export class UnsafePathError extends Error {}

/** No such regular file (`missing`: nothing at all by that name); the API answers 404. */
export class FileNotFoundError extends Error {
  constructor(
    message: string,
    readonly missing = false,
  ) {
    super(message);
  }
}

/** Linux's O_PATH, which Node's fs.constants leaves out (same value on x86-64 and arm64). */
const O_PATH = 0o10000000;
const PROBE = O_PATH | fsc.O_NOFOLLOW;
const READ = fsc.O_RDONLY | fsc.O_NONBLOCK | fsc.O_NOCTTY;
const DIR = fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;

/** The path through which the kernel reaches open descriptor `fd` (and `name` inside it). */
export function fdPath(fd: number, name?: string): string {
  return name === undefined ? `/proc/self/fd/${fd}` : `/proc/self/fd/${fd}/${name}`;
}

/** A regular file opened for reading, with its fstat at open time. */
export interface OpenedFile {
  handle: FileHandle;
  stat: Stats;
}

/**
 * Opens the regular file at `expected` (an absolute path whose folders are the real ones: no
 * link among them) for reading, or throws FileNotFoundError (missing, or not a regular file) or
 * UnsafePathError (a symbolic link in it, anywhere). See the file comment for why this is safe.
 */
export async function openRegularFile(expected: string, shown = expected): Promise<OpenedFile> {
  let probe: FileHandle;
  try {
    probe = await open(expected, PROBE);
  } catch (err) {
    throw openError(err, shown);
  }
  try {
    const first = await probe.stat();
    if (first.isSymbolicLink()) throw new UnsafePathError(`'${shown}' is a symbolic link`);
    if (!first.isFile()) throw new FileNotFoundError(`'${shown}' is not a regular file`);
    if ((await readlink(fdPath(probe.fd))) !== expected) {
      throw new UnsafePathError(`'${shown}' goes through a symbolic link`);
    }
    const handle = await open(fdPath(probe.fd), READ);
    const stat = await handle.stat().catch(async (err: unknown) => {
      await handle.close();
      throw err;
    });
    if (!stat.isFile() || stat.ino !== first.ino || stat.dev !== first.dev) {
      await handle.close();
      throw new UnsafePathError(`'${shown}' changed while it was opened`);
    }
    return { handle, stat };
  } finally {
    await probe.close();
  }
}

/** Opens the folder at `expected` (as openRegularFile: no link anywhere in it) for listing. */
export async function openFolder(expected: string, shown = expected): Promise<FileHandle> {
  let dir: FileHandle;
  try {
    // A folder's open has no side effect; O_NOFOLLOW | O_DIRECTORY refuse a final link or a
    // non-folder (ENOTDIR) before any FIFO or device open could run.
    dir = await open(expected, DIR);
  } catch (err) {
    throw openError(err, shown);
  }
  if ((await readlink(fdPath(dir.fd)).catch(() => '')) !== expected) {
    await dir.close();
    throw new UnsafePathError(`'${shown}' goes through a symbolic link`);
  }
  return dir;
}

/** Opens the regular file `name` of the open folder `dir`, for reading (fsync, or reading). */
async function openFileAt(dir: FileHandle, name: string): Promise<FileHandle | undefined> {
  const probe = await open(fdPath(dir.fd, name), PROBE).catch(() => undefined);
  if (!probe) return undefined;
  try {
    if (!(await probe.stat()).isFile()) return undefined;
    return await open(fdPath(probe.fd), READ);
  } catch {
    return undefined;
  } finally {
    await probe.close();
  }
}

function openError(err: unknown, shown: string): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ELOOP') return new UnsafePathError(`'${shown}' goes through a symbolic link`);
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new FileNotFoundError(`no file '${shown}'`, true);
  }
  return err as Error;
}

/** What walkFiles shows of each regular file: its path under the root and its lstat. */
export interface WalkedFile {
  rel: string;
  stat: Stats;
  /** Opens it for reading (undefined when it changed into something else meanwhile). */
  open(): Promise<FileHandle | undefined>;
}

/**
 * How far walkFiles may go (a listing a client asked for), each a limit on the job's doing:
 * `files` regular files visited, `entries` names looked at (files, folders, links, FIFOs...),
 * folders at most `depth` levels below the root entered, and no new name looked at after
 * `deadline` (a performance.now() time).
 */
export interface WalkBound {
  files: number;
  entries: number;
  depth: number;
  deadline: number;
}

/**
 * Visits every regular file under the real folder `root` (links, FIFOs, devices are skipped, and
 * no link is ever followed), then `onFolder` for each folder, root included. One folder is open
 * at a time, and read a few names at a time (a folder of a million names is never held whole);
 * a folder that cannot be opened safely (it became a link, it went away) is skipped. With a
 * `bound`, the walk stops at the first limit it meets and returns why, in a few words (see
 * WalkBound); undefined when it saw everything. `onFile` may stop it too, by returning why.
 */
export async function walkFiles(
  root: string,
  onFile: (f: WalkedFile) => Promise<string | void> | string | void,
  onFolder?: (dir: FileHandle) => Promise<void>,
  bound?: WalkBound,
): Promise<string | undefined> {
  const todo = [''];
  let files = 0;
  let entries = 0;
  let stopped: string | undefined;
  let tooDeep = false;
  const limit = (): string | undefined => {
    if (!bound) return undefined;
    if (files >= bound.files) return `it stops at ${bound.files} files`;
    if (entries >= bound.entries)
      return `it stops after ${bound.entries} names (files, folders, links, anything)`;
    if (performance.now() > bound.deadline) return 'it stops when it took too long';
    return undefined;
  };
  while (todo.length > 0 && !stopped) {
    const rel = todo.pop()!;
    const dir = await openFolder(rel ? path.join(root, rel) : root).catch(() => undefined);
    if (!dir) continue;
    const depth = rel ? rel.split('/').length : 0;
    try {
      const names = await opendir(fdPath(dir.fd), { bufferSize: 64 }).catch(() => undefined);
      try {
        for await (const { name } of names ?? []) {
          if ((stopped = limit())) break;
          entries++;
          const stat = await lstat(fdPath(dir.fd, name)).catch(() => undefined);
          const r = rel ? `${rel}/${name}` : name;
          if (stat?.isDirectory()) {
            if (!bound || depth < bound.depth) todo.push(r);
            else tooDeep = true;
          } else if (stat?.isFile()) {
            files++;
            // onFile may stop the walk itself, saying why (a bound of its own).
            const why = await onFile({ rel: r, stat, open: () => openFileAt(dir, name) });
            if (why) {
              stopped = why;
              break;
            }
          }
        }
      } catch {
        // The folder went away or became unreadable mid-way: what was seen stands.
      } finally {
        // A loop left early (break) closed it already; closing twice is refused, and moot.
        await names?.close().catch(() => undefined);
      }
      if (!stopped) await onFolder?.(dir);
    } finally {
      await dir.close();
    }
  }
  if (stopped) return stopped;
  if (tooDeep && bound) return `folders more than ${bound.depth} levels deep are not entered`;
  return undefined;
}

/** Folders deeper than this below the removed one are first moved up to it (descriptors used). */
const REMOVE_DEPTH = 32;
/** How long one removeTree call may work (the rest is left for the next call: the next sweep). */
export const REMOVE_MS = 60_000;
/** Names read from a folder at a time: a folder of a million names is never held whole. */
const REMOVE_BATCH = 64;

/** removeTree ran out of time, or a pass removed nothing; what is left stays for the next call. */
export class TreeNotRemovedError extends Error {}

/**
 * Removes the folder `dir` and everything in it, like `rm -rf`, but never through a link: every
 * entry is removed through the descriptor of the folder that holds it (fs.rm looks each path up
 * again by name, so a folder swapped for a link to / during the walk would lead it there).
 * `dir` itself must be a name the job cannot change (the job folder: its parent is the daemon's).
 * A missing `dir` is not an error.
 *
 * What a job can do against it, and what it does instead of giving up:
 * - a folder it made unwritable or unreadable (chmod 500, 000): each folder is given u+rwx before
 *   it is emptied (see openToEmpty for why that can touch nothing else);
 * - a chain of folders tens of thousands deep: the passes go on as long as each one removes
 *   something (32 levels a pass, the rest moved up), within `ms`;
 * - millions of names in one folder: they are read 64 at a time and removed as they are read.
 * When `ms` runs out, or a pass removes nothing (an error it cannot get past: the first one is
 * in the message), it throws TreeNotRemovedError and leaves what is left for the next call.
 */
export async function removeTree(dir: string, ms = REMOVE_MS): Promise<void> {
  let top: FileHandle | undefined;
  try {
    top = await openToEmpty(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    throw err;
  }
  // A link or a file where the folder was: remove that name, never what it points to.
  if (!top) return unlink(dir);
  const deadline = performance.now() + ms;
  try {
    for (let pass = 0; ; pass++) {
      const p: RemovePass = { seen: 0, done: 0, deadline };
      await emptyFolder(top, top, 0, p);
      if (p.seen === 0) break;
      if (performance.now() > deadline) {
        throw new TreeNotRemovedError(
          `${dir}: not removed whole within ${ms / 1000} s (${pass + 1} passes), left for later`,
        );
      }
      if (p.done === 0) {
        throw new TreeNotRemovedError(
          `${dir}: a pass removed nothing of ${p.seen} entries` +
            (p.error ? ` (${p.error.code ?? p.error.message})` : ''),
        );
      }
    }
  } finally {
    await top.close();
  }
  await rmdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/** One pass of removeTree: entries seen, entries removed (or moved up), the first error. */
interface RemovePass {
  seen: number;
  done: number;
  deadline: number;
  error?: NodeJS.ErrnoException;
}

/**
 * Opens the folder at `at` (a path whose last name may be the job's: `/proc/self/fd/N/name`) for
 * emptying; undefined when it is not a folder (a link, a file, ...). A folder the daemon may not
 * read (a job's chmod 300 or 000) is first given u+rwx; one it may read but not change (500,
 * 600) is given it by emptyFolder when an unlink there is refused (ownerRwx).
 * Why these chmods can change nothing but a folder of the tree being removed:
 * - the name is opened with O_NOFOLLOW (and O_DIRECTORY, or O_PATH where the folder cannot be
 *   read): a link the job planted there is refused or opened as the link itself, never
 *   followed, and a link is not a folder, so it is never chmodded;
 * - the chmod goes to that very inode, by its descriptor (fchmod), or for an O_PATH one through
 *   /proc/self/fd/N (the kernel follows that magic link to the inode it holds, not to a name
 *   the job could swap meanwhile), only once fstat of the descriptor says it is a folder;
 * - and `at` is either the removed folder itself or a name inside a folder already opened this
 *   way (a descriptor, not a path), so it is inside the removed tree.
 * Only the owner bits are added (u+rwx), and only to a folder of the daemon's uid (another
 * user's would refuse the chmod, and as root unlink needs no permission bits anyway).
 */
async function openToEmpty(at: string | Buffer): Promise<FileHandle | undefined> {
  const dir = await open(at, DIR).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ELOOP' || e.code === 'ENOTDIR') return null; // a link, a file...
    if (e.code === 'EACCES') return undefined; // a folder we may not read (300, 000)
    throw e;
  });
  if (dir !== undefined) return dir ?? undefined;
  const probe = await open(at, PROBE);
  try {
    const st = await probe.stat();
    if (!st.isDirectory() || !lacksOwnerRwx(st)) return undefined;
    await chmod(fdPath(probe.fd), (st.mode & 0o7777) | 0o700);
    const opened = await open(fdPath(probe.fd), fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NONBLOCK);
    const again = await opened.stat().catch(() => undefined);
    if (!again || again.ino !== st.ino || again.dev !== st.dev) {
      await opened.close();
      return undefined;
    }
    return opened;
  } finally {
    await probe.close();
  }
}

/** A folder of the daemon's uid without all of u+rwx (what openToEmpty and ownerRwx fix). */
function lacksOwnerRwx(st: Stats): boolean {
  return (st.mode & 0o700) !== 0o700 && st.uid === process.geteuid?.();
}

/** Gives u+rwx to the open folder `dir` if it is the daemon's (see openToEmpty); true if done. */
async function ownerRwx(dir: FileHandle): Promise<boolean> {
  const st = await dir.stat();
  if (!st.isDirectory() || !lacksOwnerRwx(st)) return false;
  await dir.chmod((st.mode & 0o7777) | 0o700);
  return true;
}

/**
 * Removes what `dir` holds, reading its names a few at a time and removing each as it is read;
 * folders beyond REMOVE_DEPTH are moved up into `top` for the next pass instead. Counts into
 * `p`. Names are taken as bytes: a name that is not UTF-8 must go too. An error on one entry is
 * kept (the first) and the others are still removed.
 */
async function emptyFolder(
  top: FileHandle,
  dir: FileHandle,
  depth: number,
  p: RemovePass,
): Promise<void> {
  const inDir = Buffer.from(`${fdPath(dir.fd)}/`);
  const keep = (e: NodeJS.ErrnoException) => {
    p.error ??= e;
  };
  // An unlink, rename or rmdir refused in `dir` (a job's chmod 500): u+rwx, then once more.
  let fixed = false;
  const inDirOp = async (
    op: () => Promise<unknown>,
  ): Promise<NodeJS.ErrnoException | undefined> => {
    try {
      await op();
      return undefined;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code !== 'EACCES' || fixed) return err;
      fixed = true;
      if (!(await ownerRwx(dir).catch(() => false))) return err;
      return op().then(
        () => undefined,
        (again: NodeJS.ErrnoException) => again,
      );
    }
  };
  let names: Dir;
  try {
    names = await opendir(fdPath(dir.fd), {
      encoding: 'buffer' as BufferEncoding,
      bufferSize: REMOVE_BATCH,
    });
  } catch (e) {
    return keep(e as NodeJS.ErrnoException);
  }
  try {
    for await (const dirent of names) {
      p.seen++;
      if (performance.now() > p.deadline) break;
      const entry = Buffer.concat([inDir, dirent.name as unknown as Buffer]);
      if (!dirent.isDirectory()) {
        // unlink never follows the last component: a link is removed, not its target.
        const err = await inDirOp(() => unlink(entry));
        if (!err || err.code === 'ENOENT') {
          p.done++;
          continue;
        }
        if (err.code !== 'EISDIR' && err.code !== 'EPERM') {
          keep(err);
          continue;
        }
      }
      if (depth >= REMOVE_DEPTH) {
        const to = fdPath(top.fd, `.gsc-rm-${randomBytes(8).toString('hex')}`);
        const err = await inDirOp(() => rename(entry, to));
        if (err) keep(err);
        else p.done++;
        continue;
      }
      const sub = await openToEmpty(entry).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') keep(e);
        return undefined;
      });
      if (!sub) continue; // swapped for something else meanwhile: the next pass sees it
      try {
        await emptyFolder(top, sub, depth + 1, p);
      } finally {
        await sub.close();
      }
      const err = await inDirOp(() => rmdir(entry));
      if (!err) p.done++;
      // Not empty: something was moved up into it from below (depth), or written meanwhile.
      else if (err.code !== 'ENOENT' && err.code !== 'ENOTEMPTY') keep(err);
    }
  } catch (e) {
    keep(e as NodeJS.ErrnoException); // the folder went away or became unreadable mid-way
  } finally {
    await names.close().catch(() => undefined);
  }
}
