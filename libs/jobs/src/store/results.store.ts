import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { constants as fsc, type StatsFs } from 'node:fs';
import {
  lstat,
  unlink,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  statfs,
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import type { DiskThreshold } from '../../../config/src';
import { EXIT_MARK_FLAG, exitMark, type JobPaths } from '../runner/runner';
import { isFinal, type JobRecord } from '../job-record';
import {
  FileNotFoundError,
  openRegularFile,
  removeTree,
  UnsafePathError,
  walkFiles,
  type OpenedFile,
  type WalkBound,
} from './job-files';

export { FileNotFoundError, UnsafePathError, type OpenedFile };

/**
 * How long an upload file in DATA_FOLDER/jobs/.uploads may go unwritten before any worker's
 * start removes it (ResultsStore.sweepUploads): 24 h.
 */
export const UPLOAD_ORPHAN_AGE_MS = 24 * 3600 * 1000;

/** Job ids are UUIDs; anything else is refused before it gets near a path. */
export const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const EXPERIMENT = /^[a-z0-9-]+$/;
/** The largest job.json read back (a record is a few hundred bytes; its error text is capped). */
const MAX_RECORD_BYTES = 1024 * 1024;

/** The files and folders of the job folder `dir` (libs/jobs/README.md, "Job folder"). */
export function jobPathsIn(dir: string): JobPaths {
  return {
    dir,
    params: path.join(dir, 'params.json'),
    input: path.join(dir, 'input'),
    output: path.join(dir, 'output'),
    log: path.join(dir, 'logs', 'output.log'),
  };
}

/**
 * The results store: `DATA_FOLDER/jobs/<experiment>/<id>/` with job.json, params.json, input/,
 * output/ and logs/output.log. Records are written atomically and durably. Whatever a job can
 * change (output/, and for a process job that runs as the daemon's user, its whole folder) is only
 * ever read, listed, fsynced and removed through job-files.ts, which no link, FIFO or device
 * the job leaves there can lead elsewhere or block.
 */
export class ResultsStore {
  readonly root: string;
  private statCache?: { at: number; stats: StatsFs };

  /** The start of this worker's upload file names: `<WORKER_NAME, or its hash>~`. */
  readonly uploadPrefix: string;

  constructor(dataFolder: string, workerName = '') {
    this.root = path.resolve(dataFolder, 'jobs');
    // A name that is safe as it is shows as itself; any other by a hash (never a `/` or `~`).
    const tag = /^[A-Za-z0-9_.-]{1,64}$/.test(workerName)
      ? workerName
      : `h${createHash('sha256').update(workerName).digest('hex').slice(0, 16)}`;
    this.uploadPrefix = `${tag}~`;
  }

  /** Where a multipart submission's files are received before the job's folder exists. */
  get uploadDir(): string {
    return path.join(this.root, '.uploads');
  }

  /** A new file name in uploadDir for one uploaded file: this worker's prefix and a UUID. */
  newUploadName(): string {
    return `${this.uploadPrefix}${randomUUID()}`;
  }

  /**
   * At start: removes what submissions cut off by an earlier end of the worker (a kill, a crash)
   * left in uploadDir. DATA_FOLDER may be shared by several workers (README, "Several GPU
   * hosts"), each receiving uploads there, so only these go:
   * - this worker's own files (named with its WORKER_NAME): it has no upload in progress yet;
   * - any file not written to for UPLOAD_ORPHAN_AGE_MS (a worker that was renamed or retired,
   *   or an older version's unprefixed names). Why that is safe for another worker's upload in
   *   progress: a file being received is written as its bytes come, so its mtime is never older
   *   than the request's last byte, and Node's HTTP server ends a request not received whole
   *   within its requestTimeout (300 s): 24 h is hundreds of times longer than any upload lasts.
   * Returns what was removed, by reason.
   */
  async sweepUploads(now = Date.now()): Promise<{ own: number; stale: number }> {
    const removed = { own: 0, stale: 0 };
    const dir = this.uploadDir;
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const file = path.join(dir, name);
      const st = await lstat(file).catch(() => undefined);
      if (!st || st.isDirectory()) continue;
      const own = name.startsWith(this.uploadPrefix);
      if (!own && now - st.mtimeMs < UPLOAD_ORPHAN_AGE_MS) continue;
      // unlink never follows a link: a link is removed, never its target.
      if (
        await unlink(file).then(
          () => true,
          () => false,
        )
      )
        removed[own ? 'own' : 'stale']++;
    }
    return removed;
  }

  paths(experiment: string, id: string): JobPaths {
    if (!EXPERIMENT.test(experiment) || !JOB_ID.test(id)) throw new UnsafePathError('bad job id');
    return jobPathsIn(path.join(this.root, experiment, id));
  }

  /**
   * Creates the job's folders and writes params.json and the first record. Not fsynced: until
   * the job ends, Redis (AOF) holds the truth; these files are atomic (rename), and the job's
   * own run re-reads nothing but params.json, which the rename makes whole or absent.
   */
  async create(record: JobRecord, params: unknown): Promise<JobPaths> {
    const p = this.paths(record.experiment, record.id);
    // Plain mkdir first: the experiment's folder exists after its first job.
    await mkdir(p.dir).catch(() => mkdir(p.dir, { recursive: true }));
    await Promise.all([p.input, p.output, path.dirname(p.log)].map((d) => mkdir(d)));
    await Promise.all([
      atomicWrite(p.params, JSON.stringify(params, null, 2) + '\n', { durable: false }),
      this.writeRecord(record),
    ]);
    return p;
  }

  /**
   * Writes job.json by rename, so a reader never sees half a record. A final record (succeeded,
   * failed, cancelled) is also fsynced, file and folder: once it says `succeeded`, it stays so.
   */
  async writeRecord(record: JobRecord): Promise<void> {
    const p = this.paths(record.experiment, record.id);
    await atomicWrite(path.join(p.dir, 'job.json'), JSON.stringify(record, null, 2) + '\n', {
      durable: isFinal(record.state),
    });
  }

  /**
   * Whether some try of the job exited 0 (the `logs/exited-0` mark that the runners leave): a
   * worker that died between that exit and the record must not run the job a second time.
   */
  async exitedOk(experiment: string, id: string): Promise<boolean> {
    try {
      await lstat(exitMark(this.paths(experiment, id)));
      return true;
    } catch {
      return false;
    }
  }

  /** Leaves the `logs/exited-0` mark (a leftover container found stopped with exit code 0). */
  async markExitedOk(experiment: string, id: string): Promise<void> {
    await writeFile(exitMark(this.paths(experiment, id)), '0\n', { flag: EXIT_MARK_FLAG });
  }

  async readRecord(experiment: string, id: string): Promise<JobRecord | undefined> {
    try {
      const p = this.paths(experiment, id);
      const { handle, stat } = await openRegularFile(await this.real(p.dir, 'job.json'));
      try {
        // A process job running as the daemon's user can rewrite its job.json: one of gigabytes
        // is not read into memory (a record is a few hundred bytes).
        if (stat.size > MAX_RECORD_BYTES) return undefined;
        return JSON.parse(await handle.readFile('utf8')) as JobRecord;
      } finally {
        await handle.close();
      }
    } catch {
      return undefined;
    }
  }

  /** Removes the job's folder (retention, a refused submission), never following a link in it. */
  async remove(experiment: string, id: string): Promise<void> {
    await removeTree(this.paths(experiment, id).dir);
  }

  /**
   * The real path of `dir` (a folder of this store, from paths()) joined with `parts`: the
   * store's root resolved once more (DATA_FOLDER may be a link the operator made), then the
   * names below it as they are, which is what the kernel calls a file in them if, and only if,
   * none of them is a link.
   */
  private async real(dir: string, ...parts: string[]): Promise<string> {
    return path.join(await this.realRoot(), path.relative(this.root, dir), ...parts);
  }

  private resolvedRoot?: Promise<string>;

  /**
   * DATA_FOLDER's real path, resolved once (it is the operator's, fixed while the worker runs),
   * not on every download, listing and log poll; a failure is not kept.
   */
  private realRoot(): Promise<string> {
    this.resolvedRoot ??= realpath(this.root).catch((err: unknown) => {
      this.resolvedRoot = undefined;
      throw err;
    });
    return this.resolvedRoot;
  }

  /**
   * Writes a final record. With `withOutput` (a job that succeeded), the log and every file and
   * folder under output/ are fsynced first, alongside the new record's temporary file; only then
   * is the record renamed into place and the job folder fsynced: once job.json says `succeeded`,
   * the output it speaks of is on disk. That fsync of output/ is bounded (`sync`, OUTPUT_SYNC:
   * 100,000 names, 10 s): a job that leaves a million files or hard links there would otherwise
   * hold its GPUs, its queue slot and the worker's shutdown for many minutes. Past the bound, the
   * rest is left to the kernel's writeback (seconds), and this resolves with why the fsync
   * stopped (undefined when all of output/ was fsynced): docs/EXPERIMENTS.md, "Durability".
   */
  async writeFinal(
    record: JobRecord,
    withOutput: boolean,
    sync: OutputSyncBound = OUTPUT_SYNC,
  ): Promise<string | undefined> {
    const p = this.paths(record.experiment, record.id);
    const file = path.join(p.dir, 'job.json');
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    let stopped: string | undefined;
    try {
      await Promise.all([
        writeSynced(tmp, JSON.stringify(record, null, 2) + '\n'),
        ...(withOutput
          ? [
              this.real(p.output)
                .then((out) => syncTree(out, sync))
                .then((why) => void (stopped = why)),
              this.real(p.log)
                .then(syncFile)
                .catch(() => undefined),
            ]
          : []),
      ]);
      await rename(tmp, file);
    } catch (err) {
      // No half-written temporary file left behind (a full disk makes this path common).
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await syncPath(p.dir);
    return stopped;
  }

  /**
   * True when DATA_FOLDER's filesystem has (next to) no space left for jobs: less than 1 MiB
   * available to unprivileged writers. Asked afresh (no cache): it decides how a job ends.
   */
  async isFull(): Promise<boolean> {
    try {
      const s = await statfs(this.root);
      return s.bavail * s.bsize < FULL_BELOW_BYTES;
    } catch {
      return false;
    }
  }

  /**
   * Regular files the job wrote to output/, as paths relative to it, with their sizes, sorted by
   * path. Links, FIFOs and devices are not listed, and no link is followed (job-files.ts:
   * walkFiles). Bounded by OUTPUT_LISTING (a job that makes millions of files, or thousands of
   * paths of kilobytes each, gets a listing of the first ones found, not one that takes minutes
   * and megabytes): `truncated` then says which limit stopped it.
   */
  async listOutput(
    p: JobPaths,
    limits: OutputListingBound = OUTPUT_LISTING,
  ): Promise<{ files: { path: string; size: number }[]; truncated?: string }> {
    const files: { path: string; size: number }[] = [];
    let pathBytes = 0;
    const stopped = await walkFiles(
      await this.real(p.output),
      (f) => {
        // The path as the answer carries it: JSON text, where a control character is 6 bytes.
        const bytes = Buffer.byteLength(JSON.stringify(f.rel)) - 2;
        if (pathBytes + bytes > limits.pathBytes) {
          return `it stops at ${limits.pathBytes} bytes of paths (as JSON text)`;
        }
        pathBytes += bytes;
        files.push({ path: f.rel, size: f.stat.size });
      },
      undefined,
      { ...limits, deadline: performance.now() + limits.ms },
    );
    files.sort((a, b) => byPath.compare(a.path, b.path));
    return stopped ? { files, truncated: stopped } : { files };
  }

  /**
   * Opens `requested` (already URL-decoded once by the router), a regular file inside the job's
   * output folder, for reading; or throws UnsafePathError (400) or FileNotFoundError (404).
   * Why what it returns can only be that file:
   * - the raw text is refused if it holds `..`, `.` segments, a NUL, a backslash, percent signs
   *   (a second decoding layer such as `%2e%2e`) or starts with `/`, so it is a plain relative
   *   path, and the expected path is the real output folder plus exactly that text;
   * - the file is then opened first and checked after (job-files.ts, openRegularFile): the
   *   descriptor must be a regular file whose real path is exactly the expected one, so a link
   *   the job made, in the file or any folder on the way (to /etc/shadow, to another job), a
   *   FIFO or a device is refused even when the job swaps it in between two requests or during
   *   one; and what is served is read from that same descriptor, never opened again by name.
   */
  async openOutputFile(p: JobPaths, requested: string): Promise<OpenedFile> {
    checkRelativePath(requested);
    return openRegularFile(await this.real(p.output, requested), requested);
  }

  /**
   * Opens the job's log (logs/output.log) for reading the same way as an output file: a process
   * job that runs as the daemon's user could put a link or a FIFO in its place. Undefined while
   * there is no log yet.
   */
  async openLog(p: JobPaths): Promise<OpenedFile | undefined> {
    try {
      return await openRegularFile(await this.real(p.log), 'logs/output.log');
    } catch (err) {
      if (err instanceof FileNotFoundError && err.missing) return undefined;
      throw err;
    }
  }

  /** Free space of DATA_FOLDER's filesystem against MIN_FREE_DISK; a reason when below. */
  async diskShortage(min: DiskThreshold): Promise<string | undefined> {
    // One statfs a second is plenty; a burst of submissions does not ask the kernel each time.
    const now = Date.now();
    if (!this.statCache || now - this.statCache.at > 1000) {
      await mkdir(this.root, { recursive: true });
      this.statCache = { at: now, stats: await statfs(this.root) };
    }
    const s = this.statCache.stats;
    const free = s.bavail * s.bsize;
    const total = s.blocks * s.bsize;
    if ('percent' in min) {
      const pct = total > 0 ? (free / total) * 100 : 0;
      if (pct < min.percent) {
        return `free disk space on ${this.root} is ${pct.toFixed(1)}%, below MIN_FREE_DISK ${min.percent}%`;
      }
    } else if (free < min.bytes) {
      return `free disk space on ${this.root} is ${free} bytes, below MIN_FREE_DISK ${min.bytes} bytes`;
    }
    return undefined;
  }
}

/**
 * The bounds of GET /jobs/:id/files (README, "Job API"): at most 10,000 files listed, 1 MB of
 * their paths (as JSON text), 100,000 names looked at, folders 32 levels deep, 5 s of walking.
 * Why these: 10,000 entries of ordinary paths is about 1 MB of JSON, far more than a person
 * reads and more than an experiment's results folder holds; the bytes bound keeps it so when
 * the paths are not ordinary (14 folders of 255-byte names of \x01, escaped as \u0001 in
 * JSON, made 10,000 entries 178 MB); the names bound stops a walk through millions of folders,
 * links or FIFOs that list nothing; 32 levels is more than any results tree; and 5 s keeps a
 * slow shared DATA_FOLDER (NFS) from holding the request. A download (files/PATH) is not
 * bounded by any of these.
 */
export const OUTPUT_LISTING: OutputListingBound = {
  files: 10_000,
  pathBytes: 1_000_000,
  entries: 100_000,
  depth: 32,
  ms: 5_000,
};

/**
 * WalkBound, with `ms` of walking from the start instead of a deadline, and `pathBytes`: the
 * most bytes of paths (as the answer's JSON text carries them) listed.
 */
export type OutputListingBound = Omit<WalkBound, 'deadline'> & { ms: number; pathBytes: number };

/** The order of the listing: what `a.localeCompare(b)` gives, with one collator made once. */
const byPath = new Intl.Collator();

/** Refuses anything but a plain relative path (see ResultsStore.openOutputFile). */
function checkRelativePath(requested: string): void {
  const segments = requested.split('/');
  if (
    requested.length === 0 ||
    requested.length > 4096 ||
    requested.startsWith('/') ||
    /[\0\\%]/.test(requested) ||
    segments.some((s) => s === '..' || s === '.' || s === '')
  ) {
    throw new UnsafePathError(`path '${requested}' is not a plain relative path inside output/`);
  }
}

/** The error of a job that ended because DATA_FOLDER's filesystem filled up (README: "Disk full"). */
export const DISK_FULL = 'disk full';

/** True for an ENOSPC (or EDQUOT) error, or a message that carries one. */
export function isNoSpace(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return true;
  const msg = typeof err === 'string' ? err : (err as { message?: string } | undefined)?.message;
  return /\bENOSPC\b|\bEDQUOT\b|no space left on device/i.test(msg ?? '');
}

/** Free space under which a failing job is taken to have failed for lack of it. */
export const FULL_BELOW_BYTES = 1024 * 1024;

/**
 * Writes `file` so that a crash leaves either the old or the new content: temp file, rename.
 * `durable` (the default) adds fsync of the file before the rename and of the folder after it,
 * so the new content also survives a power loss.
 */
export async function atomicWrite(
  file: string,
  content: string | Buffer,
  { durable = true }: { durable?: boolean } = {},
): Promise<void> {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeSynced(tmp, content, durable);
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  if (durable) await syncPath(path.dirname(file));
}

async function writeSynced(file: string, content: string | Buffer, sync = true): Promise<void> {
  const fh = await open(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
  try {
    await fh.writeFile(content);
    if (sync) await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncPath(p: string): Promise<void> {
  const fh = await open(p, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * The bound of the fsync of a succeeded job's output/ (ResultsStore.writeFinal): 100,000 names
 * looked at, or 10 s. An experiment's results are far fewer files (the listing shows at most
 * 10,000), fsynced in well under a second; only a hostile or broken job meets it.
 */
export const OUTPUT_SYNC: OutputSyncBound = { entries: 100_000, ms: 10_000 };

/** The names and the time of OutputListingBound: a sync lists nothing, and goes as deep as it may. */
export type OutputSyncBound = Pick<OutputListingBound, 'entries' | 'ms'>;

/**
 * fsyncs every regular file and folder under the real folder `root`, following no link, within
 * `bound`; resolves with why it stopped early (undefined when it did all).
 */
async function syncTree(root: string, bound: OutputSyncBound): Promise<string | undefined> {
  return walkFiles(
    root,
    async (f) => {
      const fh = await f.open();
      if (!fh) return;
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    },
    (dir) => dir.sync().catch(() => undefined),
    {
      files: Number.MAX_SAFE_INTEGER, // names bound them
      entries: bound.entries,
      depth: Number.MAX_SAFE_INTEGER, // a deep chain meets the names bound
      deadline: performance.now() + bound.ms,
    },
  );
}

/** fsyncs the regular file at the real path `file` (opened as job-files.ts opens output). */
async function syncFile(file: string): Promise<void> {
  const { handle } = await openRegularFile(file);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
