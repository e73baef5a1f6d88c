import { readFileSync } from 'node:fs';
import { lchown, writeFile } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { withDeadline, type Logger } from '../../../config/src';
import {
  dockerMessage,
  dockerStatusCode,
  gpuDeviceRequest,
  isDockerUnreachable,
  JOB_LABELS,
  type ContainerCreateOptions,
} from '../../../docker/src';
import type { ContainerEngine } from './docker.engine';
import { JobLog } from './job-log';
import { parseProgressLine, ProgressScanner, ProgressThrottle } from './progress';
import { EXIT_MARK_FLAG, exitMark, type RunOutcome, type RunSpec, type Runner } from './runner';

/** What `/health/ready` and `doctor` need to know about the engine. */
export interface DockerStatus {
  reachable: boolean;
  reason?: string;
  /** Whether `docker info` lists the `nvidia` runtime (informative; GPU jobs are the real test). */
  nvidiaRuntime?: boolean;
}

export interface DockerRunnerOptions {
  engine: ContainerEngine;
  /** DOCKER_HOST, for messages. */
  host: string;
  workerName: string;
  /** Time between SIGTERM and SIGKILL when a job is stopped. */
  killGraceMs: number;
  log: Logger;
  /** How long a status answer is reused. */
  statusTtlMs?: number;
  /**
   * Told of a leftover container that had exited 0 on its own (the job finished while no worker
   * watched it), before the container is removed: the job is then recorded succeeded, not run
   * again (JobsRuntime leaves the `logs/exited-0` mark).
   */
  onExitedOk?(job: string, experiment: string): Promise<void>;
}

/** One container per job, named after it: Docker itself refuses a second one (409). */
export const containerName = (jobId: string): string => `gsc-job-${jobId}`;

/**
 * What a container gets when its experiment file says nothing (README.md, "Docker experiments").
 * - pids 4096: a fork bomb stops there; threads count, and a data loader with 16 workers of 64
 *   threads each already uses 1,024.
 * - memory: 90% of the host's. Training jobs need most of a GPU host's RAM, so a small fixed
 *   default would break them; but without any limit a job that runs away makes the kernel's
 *   OOM killer choose among all processes, the worker and Redis included. Under the limit, the
 *   job alone is killed ("out of memory").
 * - nofile 65536 (data loaders open many files), or the worker's own hard limit when lower (a
 *   container cannot get more than the Engine has, and the Engine runs on this host: asking
 *   more fails every job); core 0 (a crashing job writes no core dump).
 * - a read-only image file system with a 1 GiB tmpfs at /tmp (counted in the memory limit).
 * - never uid 0: a job that would run as root (a root daemon without JOB_UID, or JOB_UID=0)
 *   runs as nobody (65534:65534) unless its experiment says `user: root`.
 */
export const CONTAINER_DEFAULTS = {
  pids: 4096,
  memoryShare: 0.9,
  nofile: 65536,
  ulimits: { core: { soft: 0, hard: 0 } } as Record<string, { soft: number; hard: number }>,
  tmpBytes: 1024 ** 3,
  nobody: { uid: 65534, gid: 65534 },
};

/** The uid:gid the container runs as: JOB_UID, but never 0 unless the experiment says `user: root`. */
export function containerUser(spec: RunSpec): { uid: number; gid: number } {
  const { uid, gid } = spec.user;
  if (uid === 0 && !spec.experiment.runAsRoot) return CONTAINER_DEFAULTS.nobody;
  return { uid, gid: gid ?? uid };
}

/** This process's hard limit on open files (/proc/self/limits), or undefined if unknown. */
export function ownOpenFilesLimit(): number | undefined {
  try {
    const m = /^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** The default ulimits (CONTAINER_DEFAULTS) with the experiment's over them. */
function ulimitsFor(exp: RunSpec['experiment']): Record<string, { soft: number; hard: number }> {
  const nofile = Math.min(CONTAINER_DEFAULTS.nofile, ownOpenFilesLimit() ?? Infinity);
  return {
    nofile: { soft: nofile, hard: nofile },
    ...CONTAINER_DEFAULTS.ulimits,
    ...exp.ulimits,
  };
}

/** The memory limit in bytes, or undefined for none (`memory: unlimited`). */
function memoryLimit(exp: RunSpec['experiment'], hostBytes: number): number | undefined {
  if (exp.memoryBytes === 'unlimited') return undefined;
  return exp.memoryBytes ?? Math.floor(hostBytes * CONTAINER_DEFAULTS.memoryShare);
}

/**
 * The container for one attempt. Safe by default: the image comes only from the experiment file;
 * the job folder is mounted read-only (the job cannot rewrite its record or log) with only
 * output/ writable; it runs as JOB_UID (never root unless asked) with every capability dropped
 * and no-new-privileges (a setuid binary in the image cannot regain root); no network unless the
 * experiment asks; limits on processes, memory and open files; the image's file system
 * read-only. Docker keeps no log of its own (the daemon writes logs/output.log).
 */
export function containerOptions(
  spec: RunSpec,
  workerName: string,
  hostMemoryBytes = totalmem(),
): ContainerCreateOptions {
  const exp = spec.experiment;
  const gpus = spec.gpus.join(',');
  const env: Record<string, string> = {
    // A writable home (the root file system is read-only); the experiment's env may set another.
    HOME: '/tmp',
    ...exp.env,
    JOB_ID: spec.jobId,
    JOB_DIR: '/job',
    JOB_PARAMS: '/job/params.json',
    JOB_INPUT: '/job/input',
    JOB_OUTPUT: '/job/output',
    // Set even when empty: CUDA images bake NVIDIA_VISIBLE_DEVICES=all in, and on a host whose
    // default runtime is nvidia a CPU-only job would otherwise see every GPU.
    CUDA_VISIBLE_DEVICES: gpus,
    NVIDIA_VISIBLE_DEVICES: gpus,
    CUDA_DEVICE_ORDER: 'PCI_BUS_ID',
  };
  const { uid, gid } = containerUser(spec);
  const memory = memoryLimit(exp, hostMemoryBytes);
  const ulimits = ulimitsFor(exp);
  const tmpBytes = exp.tmpBytes ?? CONTAINER_DEFAULTS.tmpBytes;
  return {
    name: containerName(spec.jobId),
    Image: exp.image,
    Cmd: exp.command,
    Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    WorkingDir: '/job',
    User: `${uid}:${gid}`,
    Labels: {
      [JOB_LABELS.worker]: workerName,
      [JOB_LABELS.job]: spec.jobId,
      [JOB_LABELS.experiment]: exp.name,
    },
    AttachStdout: true,
    AttachStderr: true,
    HostConfig: {
      Binds: [`${spec.paths.dir}:/job:ro`, `${spec.paths.output}:/job/output:rw`],
      ...(exp.network ? {} : { NetworkMode: 'none' }),
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      PidsLimit: exp.pids === 'unlimited' ? -1 : (exp.pids ?? CONTAINER_DEFAULTS.pids),
      ...(memory ? { Memory: memory, MemorySwap: memory } : {}),
      Ulimits: Object.entries(ulimits).map(([Name, l]) => ({ Name, Soft: l.soft, Hard: l.hard })),
      ReadonlyRootfs: !exp.writableRootfs,
      Tmpfs: { '/tmp': `rw,nosuid,nodev,size=${tmpBytes}` },
      // The daemon writes the job's log from the attach stream; a second copy under Docker's
      // data root would be outside DATA_FOLDER's disk guard (a 700 MB job, twice).
      LogConfig: { Type: 'none', Config: {} },
      ...(exp.cpus ? { NanoCpus: Math.round(exp.cpus * 1e9) } : {}),
      ...(spec.gpus.length
        ? {
            DeviceRequests: [gpuDeviceRequest(spec.gpus)],
          }
        : {}),
    },
  };
}

type StopReason = { kind: 'timeout' } | { kind: 'aborted'; reason: string };

/** How often leftover containers are looked for again while the engine could not be asked. */
const RECONCILE_RETRY_MS = 2_000;

/**
 * Runs a job as one Docker container on its GPUs; removed when the job ends, whichever way.
 * Containers of this worker that no run of this process owns are removed by `reconcile` (at
 * start, and again once the engine is back after it could not be reached).
 */
export class DockerRunner implements Runner {
  readonly kind = 'docker' as const;
  /** Jobs inside `run()` now: reconciliation never touches their containers. */
  private readonly jobs = new Set<string>();
  private cached?: { at: number; value: Promise<DockerStatus> };
  private pendingReconcile = false;
  private reconcileTimer?: NodeJS.Timeout;

  constructor(private readonly o: DockerRunnerOptions) {}

  /** Reachability (and the NVIDIA runtime), asked at most once per `statusTtlMs` (3 s). */
  status(): Promise<DockerStatus> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < (this.o.statusTtlMs ?? 3_000))
      return this.cached.value;
    const value = withDeadline(this.o.engine.info(), 5_000).then(
      (i): DockerStatus => ({ reachable: true, nvidiaRuntime: i.runtimes.includes('nvidia') }),
      (err): DockerStatus => ({ reachable: false, reason: this.unreachable(err) }),
    );
    this.cached = { at: now, value };
    return value;
  }

  /** Why no job can start now (the engine is unreachable), or undefined. */
  async unavailable(): Promise<string | undefined> {
    const s = await this.status();
    if (!s.reachable) {
      this.pendingReconcile = true;
      return s.reason;
    }
    if (this.pendingReconcile) {
      this.pendingReconcile = false;
      await this.reconcile().catch(() => (this.pendingReconcile = true));
    }
    return undefined;
  }

  /**
   * Stops and removes every container labelled with this WORKER_NAME whose job is not being run by
   * this process: left by a previous run of this worker that died (containers outlive the
   * daemon). Containers of other workers are never touched: the label filter is exact. One whose
   * job exited 0 by itself is told to `onExitedOk` first.
   */
  async reconcile(): Promise<number> {
    const mine = await this.o.engine.listByLabel(JOB_LABELS.worker, this.o.workerName);
    let n = 0;
    for (const c of mine) {
      if (c.labels[JOB_LABELS.worker] !== this.o.workerName) continue;
      const job = c.labels[JOB_LABELS.job];
      if (this.jobs.has(job)) continue;
      if (job && this.o.onExitedOk) {
        if (c.state === 'running') {
          // It may still exit 0 by itself before its removal (the listing and the removals of
          // the others take time), and a forced removal would not say so: stopped first, then
          // looked at. Killed here, it ends with 137 and runs again. Gone meanwhile (another
          // pass removed it): inspectEnd finds nothing.
          await this.o.engine.kill(c.id, 'SIGKILL');
          await this.o.engine.wait(c.id).catch(() => undefined);
        }
        const end = await this.o.engine.inspectEnd(c.id);
        // Exit 0 is the job's success, whatever OOMKilled says (the runner's own rule), of a
        // container that ran and ended (Docker says 0 for one running or never started, too).
        if (end?.ended && end.exitCode === 0) {
          await this.o
            .onExitedOk(job, c.labels[JOB_LABELS.experiment] ?? '')
            .catch((err: Error) =>
              this.o.log.warn({ job, err: err.message }, 'finished job container not recorded'),
            );
        }
      }
      await this.o.engine.remove(c.id);
      this.o.log.warn(
        { container: c.id.slice(0, 12), job: c.labels[JOB_LABELS.job] },
        'removed a job container left by a previous run of this worker',
      );
      n++;
    }
    return n;
  }

  /**
   * Reconciles before the next Docker job starts (the engine could not be asked now), and in the
   * background every 2 s until it could: a container whose removal failed while the engine was
   * away is removed once it is back, even when no Docker job comes after it.
   */
  reconcileLater(): void {
    this.pendingReconcile = true;
    this.cached = undefined;
    if (this.reconcileTimer) return;
    this.reconcileTimer = setInterval(() => {
      if (!this.pendingReconcile) {
        clearInterval(this.reconcileTimer);
        this.reconcileTimer = undefined;
        return;
      }
      this.pendingReconcile = false;
      this.reconcile().catch(() => (this.pendingReconcile = true));
    }, RECONCILE_RETRY_MS);
    this.reconcileTimer.unref();
  }

  close(): void {
    clearInterval(this.reconcileTimer);
    this.reconcileTimer = undefined;
  }

  /** The engine could not be reached before the container ran: the job waits, no try used. */
  private lost(err: unknown): RunOutcome {
    this.reconcileLater();
    return { kind: 'unavailable', reason: this.unreachable(err) };
  }

  async run(spec: RunSpec): Promise<RunOutcome> {
    if (spec.signal.aborted)
      return { kind: 'aborted', reason: reasonOf(spec.signal), exitCode: null };
    this.jobs.add(spec.jobId);
    try {
      try {
        await this.handOutput(spec);
      } catch (err) {
        return {
          kind: 'error',
          message: `cannot hand output/ to JOB_UID: ${(err as Error).message}`,
        };
      }
      let id: string;
      try {
        id = await this.create(spec);
      } catch (err) {
        if (isDockerUnreachable(err)) return this.lost(err);
        return { kind: 'error', message: this.explain(err, spec) };
      }
      try {
        return await this.runContainer(id, spec);
      } finally {
        await this.o.engine.remove(id).catch((err: Error) => {
          // Docker went away: the container is removed once it is back (reconcile).
          this.reconcileLater();
          this.o.log.warn({ job: spec.jobId, err: err.message }, 'job container not removed yet');
        });
      }
    } finally {
      this.jobs.delete(spec.jobId);
    }
  }

  /**
   * output/ is the only folder the container may write, as its user (containerUser). The daemon
   * created it; lchown changes that folder alone and never follows a link.
   */
  private async handOutput(spec: RunSpec): Promise<void> {
    const { uid, gid } = containerUser(spec);
    if (process.getuid?.() === 0 && uid !== 0) await lchown(spec.paths.output, uid, gid);
  }

  private async create(spec: RunSpec): Promise<string> {
    const opts = containerOptions(spec, this.o.workerName);
    try {
      return await this.o.engine.create(opts);
    } catch (err) {
      if (dockerStatusCode(err) !== 409) throw err;
      // A container for this job already exists: an earlier try of this worker whose removal
      // could not happen yet. Removed first, so one job never has two containers.
      const name = containerName(spec.jobId);
      const labels = await this.o.engine.labelsOf(name);
      if (labels && labels[JOB_LABELS.worker] !== this.o.workerName) {
        throw new Error(
          `container ${name} exists and belongs to worker '${labels[JOB_LABELS.worker] ?? '?'}'`,
        );
      }
      await this.o.engine.remove(name);
      return this.o.engine.create(opts);
    }
  }

  private async runContainer(id: string, spec: RunSpec): Promise<RunOutcome> {
    const engine = this.o.engine;
    const log = new JobLog(spec.paths.log);
    const closeLog = () => log.close();
    let attached;
    try {
      attached = await engine.attach(id);
    } catch (err) {
      await closeLog();
      if (isDockerUnreachable(err)) return this.lost(err);
      return { kind: 'error', message: this.explain(err, spec) };
    }
    // Bytes to the log as they come; progress from stdout lines of 64 KiB at most (progress.ts).
    const throttle = new ProgressThrottle((line) => {
      const p = parseProgressLine(line);
      if (p) spec.onProgress(p);
    });
    const scanner = new ProgressScanner((line) => throttle.push(line));
    const outputDone = Promise.all([
      log.pump(attached.stdout, (chunk) => scanner.push(chunk)),
      log.pump(attached.stderr),
    ]).then(() => {
      scanner.end();
      throttle.flush();
    });

    // Set from the abort listener and the timer: an object, so reads after an await see it.
    const st: { running: boolean; stop?: StopReason } = { running: false };
    let killTimer: NodeJS.Timeout | undefined;
    const signalStop = () => {
      engine.kill(id, 'SIGTERM').catch(() => undefined);
      killTimer = setTimeout(() => {
        engine.kill(id, 'SIGKILL').catch(() => undefined);
      }, this.o.killGraceMs);
    };
    const stop = (why: StopReason) => {
      if (st.stop) return;
      st.stop = why;
      if (st.running) signalStop();
    };
    const onAbort = () => stop({ kind: 'aborted', reason: reasonOf(spec.signal) });
    if (spec.signal.aborted) onAbort();
    else spec.signal.addEventListener('abort', onAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const t0 = performance.now();
    try {
      if (st.stop) return { kind: 'aborted', reason: reasonOf(spec.signal), exitCode: null };
      try {
        await engine.start(id);
      } catch (err) {
        if (isDockerUnreachable(err)) return this.lost(err);
        return { kind: 'error', message: this.explain(err, spec) };
      }
      st.running = true;
      if (st.stop) signalStop();
      const timeout = spec.experiment.timeoutMs;
      if (timeout) timer = setTimeout(() => stop({ kind: 'timeout' }), timeout);
      let waitCode: number;
      try {
        waitCode = await engine.wait(id);
      } catch (err) {
        this.reconcileLater();
        return {
          kind: 'error',
          message: `lost the Docker Engine while the job ran: ${dockerMessage(err)}`,
        };
      }
      const runMs = Math.round((performance.now() - t0) * 10) / 10;
      // The attach stream ends with the container; a short cap in case the engine keeps it open.
      await Promise.race([outputDone, sleep(2_000)]);
      const end = await engine.inspectEnd(id).catch(() => undefined);
      const exitCode = end?.exitCode ?? waitCode;
      const why = stopped(st);
      if (why?.kind === 'timeout') return { kind: 'timeout', exitCode, runMs };
      if (why) return { kind: 'aborted', reason: why.reason, exitCode, runMs };
      // OOMKilled means some process of the container was; a job that survived it and exited 0
      // decided for itself.
      if (end?.oomKilled && exitCode !== 0)
        return { kind: 'error', message: 'out of memory', exitCode, runMs };
      if (log.error) {
        return { kind: 'error', message: `cannot write ${spec.paths.log}: ${log.error.message}` };
      }
      // The try succeeded: its mark goes down before the container is removed (run()'s finally).
      // A worker killed after that removal and before the record is written would otherwise
      // leave nothing that says so (no container for reconciliation to inspect), and the job
      // would run a second time (a chaos run saw it).
      if (exitCode === 0) await this.markExitedOk(spec);
      return { kind: 'exited', exitCode, runMs };
    } finally {
      clearTimeout(timer);
      clearTimeout(killTimer);
      spec.signal.removeEventListener('abort', onAbort);
      attached.close();
      await closeLog();
    }
  }

  /** The `logs/exited-0` mark (runner.ts). */
  private async markExitedOk(spec: RunSpec): Promise<void> {
    await writeFile(exitMark(spec.paths), '0\n', { flag: EXIT_MARK_FLAG }).catch((err: Error) =>
      // The record still says what happened; the mark only spares a rerun after a worker crash.
      this.o.log.warn({ job: spec.jobId, err: err.message }, 'exit mark not written'),
    );
  }

  /** An engine error as a message that says what to do. */
  private explain(err: unknown, spec: RunSpec): string {
    const msg = dockerMessage(err);
    if (isDockerUnreachable(err)) return this.unreachable(err);
    if (dockerStatusCode(err) === 404 && /no such image/i.test(msg)) {
      return `image ${spec.experiment.image} not found on this host; docker.sh pull or docker load it`;
    }
    if (/error setting rlimit/i.test(msg)) {
      return (
        `a ulimit of experiment ${spec.experiment.name} is above what the Docker Engine may ` +
        `grant (its own limit): lower it in ${spec.experiment.file} (Docker said: ${msg})`
      );
    }
    if (spec.gpus.length && /device driver|nvidia|runtime/i.test(msg)) {
      return (
        `this GPU job needs NVIDIA's container runtime, which this Docker Engine lacks: install ` +
        `nvidia-container-toolkit, run 'nvidia-ctk runtime configure --runtime=docker' and ` +
        `restart Docker (Docker said: ${msg})`
      );
    }
    return `docker: ${msg}`;
  }

  private unreachable(err: unknown): string {
    return `Docker Engine at ${this.o.host} is unreachable: ${dockerMessage(err)}`;
  }
}

/** Read through a call: TypeScript cannot see the listener set it across the awaits. */
const stopped = (st: { stop?: StopReason }): StopReason | undefined => st.stop;

function reasonOf(signal: AbortSignal): string {
  return String(signal.reason ?? 'cancelled');
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());
