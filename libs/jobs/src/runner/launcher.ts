import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { openScope, type ScopeSpec } from './job-scope';
import { launchOne, type LaunchEnd, type LaunchRequest, type LaunchStart } from './launch';
import type { HelperRequest } from './spawn-helper';

export type { LaunchEnd, LaunchRequest, LaunchStart } from './launch';

/** A started launch: its start, its end, and a way to stop it. */
export interface Launched {
  started: Promise<LaunchStart>;
  ended: Promise<LaunchEnd>;
  /** SIGTERM: every process of the job; SIGKILL: the job's whole scope. */
  signal(sig: 'SIGTERM' | 'SIGKILL'): void;
}

/**
 * Starts job processes. `onProgressLine` gets the stdout lines that start with `::progress::`
 * (64 KiB at most, a few a second); stdout and stderr go to the log as bytes.
 */
export interface Launcher {
  launch(req: LaunchRequest, onProgressLine: (line: string) => void): Launched;
  close(): void;
}

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
    const ctl = launchOne(req, {
      started: started.resolve,
      progress: onProgressLine,
      ended: ended.resolve,
    });
    return { started: started.promise, ended: ended.promise, signal: (s) => ctl.signal(s) };
  }

  close(): void {}
}

/**
 * How to run the helper: its compiled module next to this one (dist/), or, when this code runs
 * from the TypeScript sources (jest), the .ts file through scripts/ts-register.js.
 */
function helperArgs(): string[] {
  const js = path.join(__dirname, 'spawn-helper.js');
  if (existsSync(js)) return [js];
  const root = path.join(__dirname, '..', '..', '..', '..');
  return [
    '-r',
    path.join(root, 'scripts', 'ts-register.js'),
    path.join(__dirname, 'spawn-helper.ts'),
  ];
}

interface Pending {
  scope: ScopeSpec;
  pid?: number;
  started: (s: LaunchStart) => void;
  ended: (e: LaunchEnd) => void;
  onLine: (line: string) => void;
}

type HelperReply = { id: number; start?: LaunchStart; line?: string; end?: LaunchEnd };

/**
 * Spawns through a small helper process (spawn-helper.ts: plain Node, a few MB of heap). fork()
 * copies the caller's page tables, so spawning from the daemon costs milliseconds that grow with
 * its memory (about 4 ms here, 28 ms at 300 MB); from the helper it stays near 2 ms. If the helper
 * dies, the daemon kills the scopes of its pending jobs, they end with an error, and the next
 * launch starts a new helper. When the daemon dies, even by SIGKILL, the helper sees the IPC
 * channel close, kills every job it started and exits: no job outlives its worker.
 */
export class HelperLauncher implements Launcher {
  private helper?: ChildProcess;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  private ensure(): ChildProcess {
    if (this.helper && this.helper.connected) return this.helper;
    const h = spawn(process.execPath, ['--max-old-space-size=64', ...helperArgs()], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    h.on('message', (m: HelperReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      if (m.start) {
        if ('pid' in m.start) p.pid = m.start.pid;
        p.started(m.start);
      }
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
        void this.orphaned(p);
      }
    });
    h.on('error', () => undefined);
    h.unref();
    (h.channel as { unref?: () => void } | undefined)?.unref?.();
    this.helper = h;
    return h;
  }

  /** The helper died under a job: whatever of the job still runs is killed from here. */
  private async orphaned(p: Pending): Promise<void> {
    try {
      const scope = openScope(p.scope, false);
      if (p.pid) scope.watch(p.pid);
      await scope.kill();
    } catch {
      /* nothing left to kill */
    }
    p.ended({ error: 'spawn helper exited' });
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
      scope: req.scope,
      started: started.resolve,
      ended: ended.resolve,
      onLine: onProgressLine,
    });
    const helper = this.ensure();
    helper.send({ id, req } satisfies HelperRequest);
    return {
      started: started.promise,
      ended: ended.promise,
      signal: (signal) => {
        if (this.pending.has(id) && helper.connected) {
          helper.send({ id, signal } satisfies HelperRequest, () => undefined);
        }
      },
    };
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
