import { lchown } from 'node:fs/promises';
import { JobIsolation } from './isolation';
import { DirectLauncher, type Launcher } from './launcher';
import { parseProgressLine } from './progress';
import { exitMark, type RunOutcome, type RunSpec, type Runner } from './runner';

export interface ProcessRunnerOptions {
  /** Time between SIGTERM and SIGKILL when a job is stopped. */
  killGraceMs: number;
  /** PATH handed to jobs (the daemon's own by default). */
  path?: string;
  /** How processes are started: DirectLauncher (default) or HelperLauncher. */
  launcher?: Launcher;
  /** How each job's processes are kept together: JobIsolation.detect() (default: /proc only). */
  isolation?: JobIsolation;
}

/** The environment a process job sees (README.md): nothing else of the daemon's leaks in. */
export function jobEnv(spec: RunSpec, basePath: string): Record<string, string> {
  const gpus = spec.gpus.join(',');
  return {
    PATH: basePath,
    HOME: spec.paths.dir,
    LANG: 'C.UTF-8',
    ...spec.experiment.env,
    JOB_ID: spec.jobId,
    JOB_DIR: spec.paths.dir,
    JOB_PARAMS: spec.paths.params,
    JOB_INPUT: spec.paths.input,
    JOB_OUTPUT: spec.paths.output,
    // Empty for CPU jobs, so a framework does not grab every GPU on the host.
    CUDA_VISIBLE_DEVICES: gpus,
    NVIDIA_VISIBLE_DEVICES: gpus,
    CUDA_DEVICE_ORDER: 'PCI_BUS_ID',
  };
}

/**
 * Runs a job as a plain process: its own session and process group, cwd = the job's directory,
 * in its own cgroup where the daemon can make one (JobIsolation). When the job's first process
 * exits, is cancelled or times out, every process it started is killed, whatever it did to get
 * away (setsid, double fork). It is no sandbox: README.md, "Process runner", says what it does
 * and does not isolate.
 */
export class ProcessRunner implements Runner {
  readonly kind = 'process' as const;
  private readonly launcher: Launcher;
  readonly isolation: JobIsolation;

  constructor(private readonly opts: ProcessRunnerOptions) {
    this.launcher = opts.launcher ?? new DirectLauncher();
    this.isolation = opts.isolation ?? JobIsolation.proc();
  }

  async run(spec: RunSpec): Promise<RunOutcome> {
    const [cmd, ...args] = spec.experiment.command;
    const asOther = process.getuid?.() !== spec.user.uid;
    const user = { uid: spec.user.uid, gid: spec.user.gid ?? spec.user.uid };
    try {
      await handOutput(spec, asOther);
    } catch (err) {
      return {
        kind: 'error',
        message: `cannot hand output/ to JOB_UID: ${(err as Error).message}`,
      };
    }
    const t0 = performance.now();
    const launched = this.launcher.launch(
      {
        cmd,
        args,
        cwd: spec.paths.dir,
        env: jobEnv(spec, this.opts.path ?? process.env.PATH ?? '/usr/bin:/bin'),
        log: spec.paths.log,
        exitMark: exitMark(spec.paths),
        scope: this.isolation.specFor(spec.jobId),
        ...(asOther ? user : {}),
      },
      (line) => {
        const p = parseProgressLine(line);
        if (p) spec.onProgress(p);
      },
    );
    const start = await launched.started;
    if ('error' in start) {
      await launched.ended;
      return { kind: 'error', message: `cannot start ${cmd}: ${start.error}` };
    }
    spec.onStarted?.({ pid: start.pid });

    let stopReason: { kind: 'timeout' } | { kind: 'aborted'; reason: string } | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const stop = (why: NonNullable<typeof stopReason>) => {
      if (stopReason) return;
      stopReason = why;
      launched.signal('SIGTERM');
      killTimer = setTimeout(() => launched.signal('SIGKILL'), this.opts.killGraceMs);
    };
    const onAbort = () =>
      stop({ kind: 'aborted', reason: String(spec.signal.reason ?? 'cancelled') });
    if (spec.signal.aborted) onAbort();
    else spec.signal.addEventListener('abort', onAbort, { once: true });
    const timeout = spec.experiment.timeoutMs;
    const timer = timeout ? setTimeout(() => stop({ kind: 'timeout' }), timeout) : undefined;

    // Resolves once every process of the job is gone (the launcher kills what the first one
    // left behind) and the log is flushed.
    const end = await launched.ended;
    const runMs = Math.round((performance.now() - t0) * 10) / 10;
    clearTimeout(timer);
    clearTimeout(killTimer);
    spec.signal.removeEventListener('abort', onAbort);
    if ('error' in end) return { kind: 'error', message: end.error, runMs };
    const { code: exitCode, signal } = end;
    if (stopReason?.kind === 'timeout') return { kind: 'timeout', exitCode, runMs };
    if (stopReason?.kind === 'aborted') {
      return { kind: 'aborted', reason: stopReason.reason, exitCode, runMs };
    }
    return signal
      ? { kind: 'exited', exitCode, signal, runMs }
      : { kind: 'exited', exitCode, runMs };
  }

  /**
   * Kills what a previous run of this worker left in its job cgroups (at start, before any job
   * runs here). Returns how many job cgroups there were.
   */
  reconcile(): Promise<number> {
    return this.isolation.sweep();
  }

  /** Releases the launcher (its helper); the isolation belongs to whoever passed it in. */
  close(): void {
    this.launcher.close();
  }
}

/**
 * output/ is the only folder a job running as JOB_UID may write: a root daemon hands it over
 * (the daemon created it; lchown changes that folder alone and never follows a link).
 */
async function handOutput(spec: RunSpec, asOther: boolean): Promise<void> {
  if (!asOther || process.getuid?.() !== 0) return;
  await lchown(spec.paths.output, spec.user.uid, spec.user.gid ?? spec.user.uid);
}
