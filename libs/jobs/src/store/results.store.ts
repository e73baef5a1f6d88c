import { randomBytes } from 'node:crypto';
import { constants as fsc, type StatsFs } from 'node:fs';
import {
  lstat,
  unlink,
  mkdir,
  open,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  statfs,
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import type { DiskThreshold } from '../../../config/src';
import { exitMark, type JobPaths } from '../runner/runner';
import { isFinal, type JobRecord } from '../job-record';

/** Job ids are UUIDs; anything else is refused before it gets near a path. */
export const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const EXPERIMENT = /^[a-z0-9-]+$/;

/** Why a requested output path is refused; the controller maps it to a 4xx. */
export class UnsafePathError extends Error {}

/** The files and folders of the job folder `dir` (DESIGN.md, "Job directory"). */
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
 * output/ and logs/output.log (DESIGN.md). Records are written atomically and durably.
 */
export class ResultsStore {
  readonly root: string;
  private statCache?: { at: number; stats: StatsFs };

  constructor(dataFolder: string) {
    this.root = path.resolve(dataFolder, 'jobs');
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
    await writeFile(exitMark(this.paths(experiment, id)), '0\n');
  }

  async readRecord(experiment: string, id: string): Promise<JobRecord | undefined> {
    try {
      const p = this.paths(experiment, id);
      return JSON.parse(await readFile(path.join(p.dir, 'job.json'), 'utf8')) as JobRecord;
    } catch {
      return undefined;
    }
  }

  async remove(experiment: string, id: string): Promise<void> {
    await rm(this.paths(experiment, id).dir, { recursive: true, force: true });
  }

  /**
   * Writes a final record. With `withOutput` (a job that succeeded), the log and every file and
   * folder under output/ are fsynced first, alongside the new record's temporary file; only then
   * is the record renamed into place and the job folder fsynced: once job.json says `succeeded`,
   * the output it speaks of is on disk.
   */
  async writeFinal(record: JobRecord, withOutput: boolean): Promise<void> {
    const p = this.paths(record.experiment, record.id);
    const file = path.join(p.dir, 'job.json');
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await Promise.all([
        writeSynced(tmp, JSON.stringify(record, null, 2) + '\n'),
        ...(withOutput ? [syncTree(p.output), syncPath(p.log).catch(() => undefined)] : []),
      ]);
      await rename(tmp, file);
    } catch (err) {
      // No half-written temporary file left behind (a full disk makes this path common).
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await syncPath(p.dir);
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

  /** Files the job wrote to output/, as paths relative to it (symlinks are not listed). */
  async listOutput(p: JobPaths): Promise<{ path: string; size: number }[]> {
    const out: { path: string; size: number }[] = [];
    const walk = async (rel: string): Promise<void> => {
      const entries = await readdir(path.join(p.output, rel), { withFileTypes: true }).catch(
        () => [],
      );
      for (const e of entries) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) await walk(r);
        else if (e.isFile())
          out.push({ path: r, size: (await lstat(path.join(p.output, r))).size });
      }
    };
    await walk('');
    return out.sort((a, b) => a.path.localeCompare(b.path));
  }

  /**
   * Resolves `requested` (already URL-decoded once by the router) to a regular file inside the
   * job's output folder, or throws UnsafePathError. Why this is safe:
   * - the raw text is refused if it holds `..`, `.` segments, a NUL, a backslash, percent signs
   *   (a second decoding layer such as `%2e%2e`) or starts with `/`, so it is a plain relative path;
   * - it is then joined to output/ and the result must still start with output/ + separator;
   * - finally realpath() follows every symlink, in the path and in output/ itself, and the real
   *   file must lie under the real output folder: a symlink the job made (to /etc/passwd, or to
   *   another job) is refused even though its name looks innocent; and it must be a regular file.
   */
  async resolveOutputFile(p: JobPaths, requested: string): Promise<string> {
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
    const joined = path.resolve(p.output, requested);
    if (!joined.startsWith(p.output + path.sep)) throw new UnsafePathError('path leaves output/');
    let real: string;
    let realRoot: string;
    try {
      [real, realRoot] = await Promise.all([realpath(joined), realpath(p.output)]);
    } catch {
      throw new FileNotFoundError(`no file '${requested}' in this job's output`);
    }
    if (!real.startsWith(realRoot + path.sep) || real !== path.join(realRoot, requested)) {
      throw new UnsafePathError(`path '${requested}' goes through a symbolic link`);
    }
    const st = await lstat(real);
    if (!st.isFile()) throw new FileNotFoundError(`'${requested}' is not a file`);
    return real;
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

export class FileNotFoundError extends Error {}

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

async function syncTree(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await syncTree(p);
    else if (e.isFile()) await syncPath(p);
  }
  await syncPath(dir).catch(() => undefined);
}
