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
}

/** The environment a process job sees (DESIGN.md): nothing else of the daemon's leaks in. */
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

/** Runs a job as a plain process in its own process group, cwd = the job's directory. */
export class ProcessRunner implements Runner {
  readonly kind = 'process' as const;
  private readonly launcher: Launcher;

  constructor(private readonly opts: ProcessRunnerOptions) {
    this.launcher = opts.launcher ?? new DirectLauncher();
  }

  async run(spec: RunSpec): Promise<RunOutcome> {
    const [cmd, ...args] = spec.experiment.command;
    const asOther = process.getuid?.() !== spec.user.uid;
    const t0 = performance.now();
    const { started, ended } = this.launcher.launch(
      {
        cmd,
        args,
        cwd: spec.paths.dir,
        env: jobEnv(spec, this.opts.path ?? process.env.PATH ?? '/usr/bin:/bin'),
        log: spec.paths.log,
        exitMark: exitMark(spec.paths),
        ...(asOther ? { uid: spec.user.uid, gid: spec.user.gid ?? spec.user.uid } : {}),
      },
      (line) => {
        const p = parseProgressLine(line);
        if (p) spec.onProgress(p);
      },
    );
    const start = await started;
    if ('error' in start) {
      await ended;
      return { kind: 'error', message: `cannot start ${cmd}: ${start.error}` };
    }
    const pid = start.pid;
    spec.onStarted?.({ pid });

    let stopReason: { kind: 'timeout' } | { kind: 'aborted'; reason: string } | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const stop = (why: NonNullable<typeof stopReason>) => {
      if (stopReason) return;
      stopReason = why;
      signalGroup(pid, 'SIGTERM');
      killTimer = setTimeout(() => signalGroup(pid, 'SIGKILL'), this.opts.killGraceMs);
    };
    const onAbort = () =>
      stop({ kind: 'aborted', reason: String(spec.signal.reason ?? 'cancelled') });
    if (spec.signal.aborted) onAbort();
    else spec.signal.addEventListener('abort', onAbort, { once: true });
    const timeout = spec.experiment.timeoutMs;
    const timer = timeout ? setTimeout(() => stop({ kind: 'timeout' }), timeout) : undefined;

    const end = await ended;
    const runMs = Math.round((performance.now() - t0) * 10) / 10;
    clearTimeout(timer);
    clearTimeout(killTimer);
    spec.signal.removeEventListener('abort', onAbort);
    // The leader exited; anything it left behind in its group goes too.
    signalGroup(pid, 'SIGKILL');
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

  close(): void {
    this.launcher.close();
  }
}

function signalGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    /* the group is already gone */
  }
}
