import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

/** One process to start: its own process group, output appended to `log`. */
export interface LaunchRequest {
  cmd: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  uid?: number;
  gid?: number;
  log: string;
  /** Written (`0`) as soon as the process exits 0, before the end is reported (runner.ts). */
  exitMark?: string;
}

export type LaunchStart = { pid: number } | { error: string };
/** The end, once the log is flushed: the exit, or why it never ran or could not be watched. */
export type LaunchEnd = { code: number | null; signal: NodeJS.Signals | null } | { error: string };

export interface Launched {
  started: Promise<LaunchStart>;
  ended: Promise<LaunchEnd>;
}

/**
 * Starts job processes. `onProgressLine` gets the stdout lines that start with `::progress::`;
 * every line of stdout and stderr goes to the log.
 */
export interface Launcher {
  launch(req: LaunchRequest, onProgressLine: (line: string) => void): Launched;
  close(): void;
}

const PREFIX = '::progress::';

// The body shared by both launchers: spawn detached, log everything, report progress lines.
// Kept as plain JavaScript so the helper below can run it with `node -e`.
const LAUNCH_JS = `
function launchOne(spawn, createWriteStream, createInterface, writeFileSync, req, onStart, onLine, onEnd) {
  let done = false;
  const finish = (end) => { if (!done) { done = true; onEnd(end); } };
  const log = createWriteStream(req.log, { flags: 'a' });
  let logError;
  let child;
  // A log that cannot be written (the disk is full) ends the job: its output could not be kept.
  log.on('error', (e) => {
    logError = logError || e;
    if (child && child.pid) { try { process.kill(-child.pid, 'SIGKILL'); } catch (x) {} }
  });
  try {
    child = spawn(req.cmd, req.args, {
      cwd: req.cwd, env: req.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
      ...(req.uid !== undefined ? { uid: req.uid, gid: req.gid } : {}),
    });
  } catch (e) {
    onStart({ error: e.message });
    log.end(() => finish({ error: e.message }));
    return;
  }
  child.on('error', (e) => { onStart({ error: e.message }); log.end(() => finish({ error: e.message })); });
  if (child.pid !== undefined) onStart({ pid: child.pid });
  child.stderr.pipe(log, { end: false });
  createInterface({ input: child.stdout, crlfDelay: Infinity }).on('line', (line) => {
    log.write(line + '\\n');
    if (line.startsWith(${JSON.stringify(PREFIX)})) onLine(line);
  });
  child.on('close', (code, signal) => {
    if (code === 0 && req.exitMark) { try { writeFileSync(req.exitMark, '0\\n'); } catch (e) {} }
    const end = () => finish(logError ? { error: 'cannot write ' + req.log + ': ' + logError.message } : { code, signal });
    if (log.closed || log.destroyed) end(); else { log.once('close', end); log.end(); }
  });
}
`;

// eslint-disable-next-line @typescript-eslint/no-implied-eval -- the same code runs in the helper
const launchOne = new Function(`${LAUNCH_JS}; return launchOne;`)() as (...a: unknown[]) => void;

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Spawns from the daemon itself: simple, but fork() costs grow with the daemon's memory. */
export class DirectLauncher implements Launcher {
  launch(req: LaunchRequest, onProgressLine: (line: string) => void): Launched {
    const started = deferred<LaunchStart>();
    const ended = deferred<LaunchEnd>();
    launchOne(
      spawn,
      createWriteStream,
      createInterface,
      writeFileSync,
      req,
      started.resolve,
      onProgressLine,
      ended.resolve,
    );
    return { started: started.promise, ended: ended.promise };
  }

  close(): void {}
}

const HELPER_JS = `${LAUNCH_JS}
const { spawn } = require('node:child_process');
const { createWriteStream, writeFileSync } = require('node:fs');
const { createInterface } = require('node:readline');
const groups = new Set();
let live = 0;
let leaving = false;
const killAll = () => {
  for (const pid of groups) { try { process.kill(-pid, 'SIGKILL'); } catch {} }
  groups.clear();
};
// The daemon went away (even by SIGKILL): no job outlives it, nobody would record its end. A send
// to a dead daemon fails through its callback, never as an uncaught error; and whatever way this
// helper ends, its jobs end with it. It waits (2 s at most) for the killed jobs' ends to be seen,
// so a job that had exited 0 just before still leaves its exit mark.
process.on('disconnect', () => {
  killAll();
  leaving = true;
  if (live === 0) process.exit(0);
  setTimeout(() => process.exit(0), 2000);
});
process.on('uncaughtException', () => { killAll(); process.exit(1); });
process.on('exit', killAll);
process.on('message', (m) => {
  const send = (msg) => { if (process.connected) process.send({ id: m.id, ...msg }, () => {}); };
  let pid;
  live++;
  launchOne(spawn, createWriteStream, createInterface, writeFileSync, m.req,
    (s) => { if (s.pid) { pid = s.pid; groups.add(pid); if (leaving) killAll(); } send({ start: s }); },
    (line) => send({ line }),
    (end) => { groups.delete(pid); live--; send({ end }); if (leaving && live === 0) process.exit(0); });
});
`;

interface Pending {
  started: (s: LaunchStart) => void;
  ended: (e: LaunchEnd) => void;
  onLine: (line: string) => void;
}

/**
 * Spawns through a small helper process (plain Node, a few MB of heap). fork() copies the
 * caller's page tables, so spawning from the daemon costs milliseconds that grow with its memory
 * (about 4 ms here, 28 ms at 300 MB); from the helper it stays near 2 ms. Falls back to nothing
 * clever: if the helper dies, pending launches end with an error and the next one starts a new
 * helper. When the daemon dies, even by SIGKILL, the helper sees the IPC channel close, kills the
 * process groups of the jobs it started and exits: no job outlives its worker.
 */
export class HelperLauncher implements Launcher {
  private helper?: ChildProcess;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  private ensure(): ChildProcess {
    if (this.helper && this.helper.connected) return this.helper;
    const h = spawn(process.execPath, ['--max-old-space-size=64', '-e', HELPER_JS], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    h.on('message', (m: { id: number; start?: LaunchStart; line?: string; end?: LaunchEnd }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      if (m.start) p.started(m.start);
      if (m.line !== undefined) p.onLine(m.line);
      if (m.end) {
        this.pending.delete(m.id);
        p.started({ error: 'never started' }); // no-op when it did
        p.ended(m.end);
      }
    });
    h.on('exit', () => {
      if (this.helper === h) this.helper = undefined;
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        p.started({ error: 'spawn helper exited' });
        p.ended({ error: 'spawn helper exited' });
      }
    });
    h.on('error', () => undefined);
    h.unref();
    (h.channel as { unref?: () => void } | undefined)?.unref?.();
    this.helper = h;
    return h;
  }

  /** The helper's pid while it runs (for health checks and tests). */
  get helperPid(): number | undefined {
    return this.helper?.pid;
  }

  launch(req: LaunchRequest, onProgressLine: (line: string) => void): Launched {
    const started = deferred<LaunchStart>();
    const ended = deferred<LaunchEnd>();
    const id = this.nextId++;
    this.pending.set(id, {
      started: started.resolve,
      ended: ended.resolve,
      onLine: onProgressLine,
    });
    this.ensure().send({ id, req });
    return { started: started.promise, ended: ended.promise };
  }

  close(): void {
    const h = this.helper;
    this.helper = undefined;
    if (h && h.exitCode === null) {
      h.disconnect();
      void once(h, 'exit').catch(() => undefined);
    }
  }
}
