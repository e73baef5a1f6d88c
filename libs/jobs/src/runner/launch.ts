import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { JobLog } from './job-log';
import { EXIT_MARK_FLAG } from './runner';
import { openScope, type JobScope, type ScopeSpec } from './job-scope';
import { ProgressScanner, ProgressThrottle } from './progress';

/** One process to start: its own session and process group, in its scope, output to `log`. */
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
  /** Where the job's processes are kept, so that all of them end with it. */
  scope: ScopeSpec;
}

export type LaunchStart = { pid: number } | { error: string };
/** The end, once the log is flushed: the exit, or why it never ran or could not be watched. */
export type LaunchEnd = { code: number | null; signal: NodeJS.Signals | null } | { error: string };

/** What a launch reports, in this order: started once, progress lines, ended once. */
export interface LaunchEvents {
  started(s: LaunchStart): void;
  progress(line: string): void;
  ended(e: LaunchEnd): void;
}

/** Stops a launched job. */
export interface LaunchControl {
  /** SIGTERM: to every process of the job; SIGKILL: the whole scope, then it is removed. */
  signal(sig: 'SIGTERM' | 'SIGKILL'): void;
  /** Kills every process of the job at once, synchronously (the launcher is going away). */
  killNow(): void;
}

/** How long the output pipes may stay open once every process of the job was killed. */
const OUTPUT_CLOSE_MS = 2_000;

/**
 * Starts one job process and follows it to its end; shared by both launchers (the spawn helper
 * runs it in its own process). The log gets stdout and stderr as bytes; `::progress::` lines of
 * stdout up to 64 KiB are reported, a few a second at most. When the leader exits, whatever the
 * job left running (a `setsid` daemon, a double fork) is killed with its scope: a job ends whole.
 */
export function launchOne(req: LaunchRequest, ev: LaunchEvents): LaunchControl {
  let done = false;
  const finish = (end: LaunchEnd) => {
    if (!done) {
      done = true;
      ev.ended(end);
    }
  };
  let scope: JobScope | undefined;
  // A log that cannot be written (the disk is full) ends the job: its output could not be kept.
  const log = new JobLog(req.log, () => void scope?.kill());
  const fail = (message: string) => {
    ev.started({ error: message });
    void (scope?.kill() ?? Promise.resolve())
      .then(() => log.close())
      .then(() => finish({ error: message }));
  };
  const none: LaunchControl = { signal: () => undefined, killNow: () => undefined };
  let child: ChildProcess;
  try {
    scope = openScope(req.scope, true);
    const s = scope;
    child = s.spawnInside(() =>
      spawn(req.cmd, req.args, {
        cwd: req.cwd,
        env: req.env,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(req.uid !== undefined ? { uid: req.uid, gid: req.gid } : {}),
      }),
    );
  } catch (err) {
    fail((err as Error).message);
    return none;
  }
  if (child.pid === undefined) {
    // The command could not be started (no such file, no permission): said through 'error'.
    child.once('error', (err) => fail(err.message));
    return none;
  }
  const jobScope = scope;
  ev.started({ pid: child.pid });
  jobScope.watch(child.pid);
  const throttle = new ProgressThrottle((line) => ev.progress(line));
  const scanner = new ProgressScanner((line) => throttle.push(line));
  const output = Promise.all([
    log.pump(child.stdout!, (chunk) => scanner.push(chunk)),
    log.pump(child.stderr!),
  ]);
  child.on('error', () => undefined);
  child.once('exit', (code, signal) => {
    if (code === 0 && req.exitMark) {
      try {
        writeFileSync(req.exitMark, '0\n', { flag: EXIT_MARK_FLAG as unknown as string });
      } catch {
        /* the record says what happened; the mark only spares a rerun */
      }
    }
    void (async () => {
      await jobScope.kill();
      // Every process of the job is gone, so the pipes close; a process the /proc fallback
      // could not find may still hold them: not waited for past the bound.
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<boolean>(
        (r) => (timer = setTimeout(() => r(true), OUTPUT_CLOSE_MS)),
      );
      if (await Promise.race([output.then(() => false), late])) {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }
      clearTimeout(timer);
      await output;
      scanner.end();
      throttle.flush();
      await log.close();
      const err = log.error;
      finish(err ? { error: `cannot write ${req.log}: ${err.message}` } : { code, signal });
    })();
  });
  return {
    signal: (sig) => (sig === 'SIGKILL' ? void jobScope.kill() : jobScope.signal(sig)),
    killNow: () => jobScope.killNow(),
  };
}
