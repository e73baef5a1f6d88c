import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { openScope, type ScopeSpec } from './job-scope';

/** How the process runner keeps each job's processes together (README, "Process runner"). */
export type IsolationMode = 'cgroup2' | 'cgroup1' | 'proc';

export interface IsolationOptions {
  /** WORKER_NAME and DATA_FOLDER name this worker's cgroups (two workers never share them). */
  workerName: string;
  dataFolder: string;
  /** The ways to try, in order (default: cgroup2, cgroup1, proc); tests pick one. */
  prefer?: IsolationMode[];
}

interface Mount {
  root: string;
  point: string;
  fstype: string;
  superOpts: string[];
}

/** The mounts of this process's namespace, from /proc/self/mountinfo. */
function mounts(): Mount[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => chr(o));
  const chr = (octal: string) => String.fromCharCode(parseInt(octal, 8));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [left, right] = line.split(' - ');
      const f = left.split(' ');
      const r = right.split(' ');
      return {
        root: unescape(f[3]),
        point: unescape(f[4]),
        fstype: r[0],
        superOpts: r[2].split(','),
      };
    });
}

/** This process's cgroup directory in the hierarchy `mount` (v2: `0::/path`; v1: by controller). */
function ownDir(mount: Mount, controller?: string): string | undefined {
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, id, controllers, p] = m;
    const match = controller
      ? controllers.split(',').includes(controller)
      : id === '0' && controllers === '';
    if (!match) continue;
    // The mount shows the hierarchy from `root` down (a cgroup namespace, a bind mount).
    if (mount.root !== '/' && !p.startsWith(mount.root)) return undefined;
    const dir = path.join(mount.point, mount.root === '/' ? p : p.slice(mount.root.length));
    return existsSync(dir) ? dir : undefined;
  }
  return undefined;
}

/**
 * The process runner's choice, made once at start: a cgroup per job under this worker's own
 * cgroup (cgroup v2 preferred, else v1's freezer), or, where the daemon may create none (not root
 * and no delegated cgroup: systemd's Delegate=yes), the /proc fallback. Each job's cgroup is
 * `<own cgroup>/gpu-sidecar-<WORKER_NAME>-<hash of DATA_FOLDER>/job-<id>`.
 */
export class JobIsolation {
  private constructor(
    readonly mode: IsolationMode,
    /** The folder holding this worker's job cgroups (cgroup modes). */
    readonly base?: string,
    private readonly home?: string,
    private readonly stop: 'kill' | 'freeze' = 'kill',
    /** Why no cgroup could be used (proc mode). */
    readonly reason?: string,
  ) {}

  /** Following jobs through /proc only (no cgroup): the default of a bare ProcessRunner. */
  static proc(reason = 'not asked for'): JobIsolation {
    return new JobIsolation('proc', undefined, undefined, 'kill', reason);
  }

  /** Tries the modes in order; the first that works (a cgroup made, entered and left) wins. */
  static detect(opts: IsolationOptions): JobIsolation {
    const tried: string[] = [];
    const name = `gpu-sidecar-${opts.workerName.replace(/[^\w.-]/g, '_').slice(0, 40)}-${createHash(
      'sha256',
    )
      .update(path.resolve(opts.dataFolder))
      .digest('hex')
      .slice(0, 8)}`;
    for (const mode of opts.prefer ?? ['cgroup2', 'cgroup1', 'proc']) {
      if (mode === 'proc') return JobIsolation.proc(tried.join('; ') || 'asked for');
      try {
        const mount = mounts().find((m) =>
          mode === 'cgroup2'
            ? m.fstype === 'cgroup2'
            : m.fstype === 'cgroup' && m.superOpts.includes('freezer'),
        );
        if (!mount) throw new Error('not mounted');
        const home = ownDir(mount, mode === 'cgroup1' ? 'freezer' : undefined);
        if (!home) throw new Error(`this process's cgroup is not under ${mount.point}`);
        const base = path.join(home, name);
        mkdirSync(base, { recursive: true });
        probe(base, home);
        const stop = existsSync(path.join(base, 'cgroup.kill')) ? 'kill' : 'freeze';
        return new JobIsolation(mode, base, home, stop);
      } catch (err) {
        tried.push(`${mode}: ${(err as Error).message}`);
      }
    }
    return JobIsolation.proc(tried.join('; '));
  }

  /** One line for the start-up log. */
  describe(): string {
    if (this.mode === 'proc')
      return `process tree tracking through /proc (no cgroup: ${this.reason})`;
    return `a cgroup per job (${this.mode === 'cgroup2' ? 'v2' : 'v1 freezer'}) under ${this.base}`;
  }

  /** What the launcher needs to keep this attempt's processes. */
  specFor(jobId: string): ScopeSpec {
    if (this.mode === 'proc' || !this.base || !this.home) return { kind: 'proc', jobId };
    // Why the path stays this worker's: job ids are UUIDs (the API refuses others), and any id
    // that is not a plain segment of word characters is hashed rather than joined, so no `..`,
    // `/` or NUL can take a job's cgroup (made, killed, removed) outside `base`.
    const seg = /^[\w-]{1,100}$/.test(jobId)
      ? jobId
      : createHash('sha256').update(jobId).digest('hex');
    const dir = path.join(this.base, `job-${seg}`);
    return this.mode === 'cgroup2'
      ? { kind: 'cgroup2', dir, home: this.home, stop: this.stop }
      : { kind: 'cgroup1', dir, home: this.home };
  }

  /**
   * At start, before any job runs: kills and removes every job cgroup a previous run of this
   * worker left (it was killed with its spawn helper, so nobody stopped its jobs). Returns how
   * many there were.
   */
  async sweep(): Promise<number> {
    if (!this.base || !this.home) return 0;
    let n = 0;
    for (const entry of readdirSync(this.base, { withFileTypes: true })) {
      if (!entry.isDirectory() || !entry.name.startsWith('job-')) continue;
      const dir = path.join(this.base, entry.name);
      const spec: ScopeSpec =
        this.mode === 'cgroup2'
          ? { kind: 'cgroup2', dir, home: this.home, stop: this.stop }
          : { kind: 'cgroup1', dir, home: this.home };
      await openScope(spec, false).kill();
      n++;
    }
    return n;
  }

  /** Removes this worker's (empty) cgroup folder at shutdown; one still in use stays. */
  close(): void {
    if (this.base) {
      try {
        rmdirSync(this.base);
      } catch {
        /* jobs still there, or gone already */
      }
    }
  }
}

/** Proves the daemon may use cgroups here: a child made, entered and left, then removed. */
function probe(base: string, home: string): void {
  const dir = path.join(base, `probe-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  try {
    writeFileSync(path.join(dir, 'cgroup.procs'), String(process.pid));
    writeFileSync(path.join(home, 'cgroup.procs'), String(process.pid));
  } finally {
    rmdirSync(dir);
  }
}
