import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ProcScope } from './proc-scope';

/**
 * Where one job's processes are kept, as the daemon tells the launcher (plain data: it crosses
 * the spawn helper's IPC). `cgroup2`/`cgroup1`: the job's own cgroup `dir` (v1: in the freezer
 * hierarchy); `home` is the cgroup the launcher itself lives in. `proc`: no cgroup could be made,
 * the job is followed through /proc (proc-scope.ts).
 */
export type ScopeSpec =
  | {
      kind: 'cgroup2';
      dir: string;
      home: string;
      /** `kill`: cgroup.kill (Linux 5.14+); `freeze`: freeze, kill each process, thaw. */
      stop: 'kill' | 'freeze';
    }
  | { kind: 'cgroup1'; dir: string; home: string }
  | { kind: 'proc'; jobId: string };

/** Every process a job started, whatever it did to leave its process group or session. */
export interface JobScope {
  /**
   * Calls `spawn` so that the process it starts is inside the scope from its first instruction:
   * nothing it forks, however fast, can start outside.
   */
  spawnInside<T>(spawn: () => T): T;
  /** Follows the job from its first process (its leader: own session and process group). */
  watch(pid: number): void;
  /** Sends `sig` to every process of the job (a polite stop: SIGTERM). */
  signal(sig: NodeJS.Signals): void;
  /** Kills every process of the job, waits until none is left (5 s at most), removes the scope. */
  kill(): Promise<void>;
  /** Kills them synchronously without waiting (the launcher itself is exiting). */
  killNow(): void;
}

/**
 * Opens the scope `spec` names. `create`: a new attempt of the job (a leftover cgroup of an
 * earlier one is killed first, then used); without it, one that already exists is only opened,
 * to be killed.
 */
export function openScope(spec: ScopeSpec, create: boolean): JobScope {
  if (spec.kind === 'proc') return new ProcJobScope(spec.jobId);
  return new CgroupScope(spec, create);
}

/**
 * The rule both kinds share: one kill, however many ask for it (the end of the job, a timeout's
 * SIGKILL, a full disk), and nothing after it. A later attempt of the same job has the same
 * JOB_ID and cgroup name: a kill that went on past the end of its attempt could hit the next.
 */
abstract class OnceScope implements JobScope {
  private killing?: Promise<void>;
  private over = false;

  abstract spawnInside<T>(spawn: () => T): T;
  abstract watch(pid: number): void;
  protected abstract signalAll(sig: NodeJS.Signals): void;
  protected abstract killAllNow(): void;
  protected abstract killAll(): Promise<void>;

  signal(sig: NodeJS.Signals): void {
    if (!this.over) this.signalAll(sig);
  }

  killNow(): void {
    if (!this.over) this.killAllNow();
  }

  kill(): Promise<void> {
    this.killing ??= this.killAll().finally(() => (this.over = true));
    return this.killing;
  }
}

class ProcJobScope extends OnceScope {
  private readonly proc: ProcScope;
  constructor(jobId: string) {
    super();
    this.proc = new ProcScope(jobId);
  }
  spawnInside<T>(spawn: () => T): T {
    return spawn();
  }
  watch(pid: number): void {
    this.proc.watch(pid);
  }
  protected signalAll(sig: NodeJS.Signals): void {
    this.proc.signal(sig);
  }
  protected killAll(): Promise<void> {
    return this.proc.kill();
  }
  protected killAllNow(): void {
    this.proc.killNow();
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** How long a kill waits for the cgroup to empty and go away. */
const KILL_WAIT_MS = 5_000;

/**
 * One job's cgroup. Why nothing escapes it: the launcher moves itself into the cgroup, forks the
 * job there and moves itself back (spawnInside), so the job starts inside; a process can leave a
 * cgroup only by writing to cgroup.procs of a common ancestor, which a job running as another
 * user than the daemon cannot (the directories belong to the daemon's user). setsid, double
 * forks and a cleared environment change nothing. The end is cgroup.kill (one atomic SIGKILL to
 * every process, new forks included) or, without it, freeze, SIGKILL each process, thaw.
 */
class CgroupScope extends OnceScope {
  constructor(
    private readonly spec: Extract<ScopeSpec, { kind: 'cgroup2' | 'cgroup1' }>,
    create: boolean,
  ) {
    super();
    if (!create) return;
    try {
      mkdirSync(spec.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // An earlier try of this job whose cgroup was not removed: nothing of it may run on.
      this.killAllNow();
    }
  }

  spawnInside<T>(spawn: () => T): T {
    this.move(this.spec.dir);
    try {
      return spawn();
    } finally {
      this.move(this.spec.home);
    }
  }

  watch(): void {}

  protected signalAll(sig: NodeJS.Signals): void {
    for (const pid of this.pids()) if (pid !== process.pid) send(pid, sig);
  }

  protected killAllNow(): void {
    // Never this process: it is inside only during spawnInside, but a failed move back must
    // not turn the kill on the launcher itself.
    if (this.pids().includes(process.pid)) this.move(this.spec.home);
    if (this.spec.kind === 'cgroup2' && this.spec.stop === 'kill' && this.exists()) {
      try {
        writeFileSync(this.file('cgroup.kill'), '1');
        return;
      } catch {
        /* fall back to the slower way below */
      }
    }
    this.freeze(true);
    for (const pid of this.pids()) if (pid !== process.pid) send(pid, 'SIGKILL');
    this.freeze(false);
  }

  protected async killAll(): Promise<void> {
    const deadline = Date.now() + KILL_WAIT_MS;
    if (!this.exists()) return;
    this.killAllNow();
    // cgroup.kill reaches every process at once; the freezer way is repeated for any process
    // that was still being frozen (v1 freezes asynchronously).
    while (this.populated() && Date.now() < deadline) {
      await sleep(10);
      if (this.spec.kind === 'cgroup1' || this.spec.stop === 'freeze') this.killAllNow();
    }
    // The last processes are gone; the directory goes as soon as the kernel lets it (EBUSY
    // while exiting tasks are still being released).
    while (this.exists() && Date.now() < deadline) {
      try {
        rmdirSync(this.spec.dir);
      } catch {
        await sleep(10);
      }
    }
  }

  private file(name: string): string {
    return path.join(this.spec.dir, name);
  }

  private exists(): boolean {
    return existsSync(this.spec.dir);
  }

  private move(dir: string): void {
    writeFileSync(path.join(dir, 'cgroup.procs'), String(process.pid));
  }

  private pids(): number[] {
    try {
      return readFileSync(this.file('cgroup.procs'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map(Number);
    } catch {
      return [];
    }
  }

  private populated(): boolean {
    if (this.spec.kind === 'cgroup1') return this.pids().length > 0;
    try {
      return /^populated 1$/m.test(readFileSync(this.file('cgroup.events'), 'utf8'));
    } catch {
      return false;
    }
  }

  private freeze(on: boolean): void {
    const [file, value] =
      this.spec.kind === 'cgroup1'
        ? ['freezer.state', on ? 'FROZEN' : 'THAWED']
        : ['cgroup.freeze', on ? '1' : '0'];
    try {
      writeFileSync(this.file(file), value);
    } catch {
      /* gone, or no freezer: the processes are killed one by one all the same */
    }
  }
}

function send(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone already */
  }
}
