import { constants as fsc } from 'node:fs';
import path from 'node:path';
import type { Experiment } from '../experiments/experiment';
import type { ProgressUpdate } from './progress';

/** Where one job's files live (docs/ARCHITECTURE.md, "What a job sees"). */
export interface JobPaths {
  dir: string;
  params: string;
  input: string;
  output: string;
  log: string;
}

/**
 * The mark a runner leaves when a try of the job exited 0, before the daemon records the end:
 * `logs/exited-0` (in logs/, which a Docker job cannot write). A worker that died between that
 * exit and the record finds it and records the success instead of running the job again.
 */
export const exitMark = (p: JobPaths): string => path.join(path.dirname(p.log), 'exited-0');

/**
 * How every writer opens the mark (`writeFile(mark, '0\n', { flag: EXIT_MARK_FLAG })`): a
 * process job that runs as the daemon's user can write logs/, so a link put there is refused
 * (O_NOFOLLOW) and a FIFO fails at once (O_NONBLOCK: ENXIO with no reader) instead of holding
 * the open, which in the spawn helper would stop every job it runs.
 */
export const EXIT_MARK_FLAG =
  fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;

/** Everything a runner needs to run one attempt of one job. */
export interface RunSpec {
  jobId: string;
  experiment: Experiment;
  paths: JobPaths;
  /** GPU ids assigned to this attempt (empty for a CPU-only job). */
  gpus: string[];
  user: { uid: number; gid?: number };
  /** Aborted on cancel or worker shutdown; `signal.reason` says which. */
  signal: AbortSignal;
  onProgress(update: ProgressUpdate): void;
  /** Called once the job's process exists, with what a later worker needs to stop an orphan. */
  onStarted?(info: { pid: number }): void;
}

/**
 * How an attempt ended. `exitCode` is recorded whenever the process got as far as exiting;
 * `runMs` is the time from starting it to its exit, as the runner saw it (logged with the ending).
 */
export type RunOutcome = (
  | { kind: 'exited'; exitCode: number | null; signal?: string }
  | { kind: 'timeout'; exitCode: number | null }
  | { kind: 'aborted'; reason: string; exitCode: number | null }
  | { kind: 'error'; message: string; exitCode?: number | null }
  /**
   * The job never got to run for a reason outside it (the Docker Engine went away between the
   * check and the start): handed back to the queue without using a try.
   */
  | { kind: 'unavailable'; reason: string }
) & { runMs?: number };

/**
 * A way to run a job: as a plain process or as a Docker container. A runner never throws for
 * anything the job did; it resolves with the outcome, and has stopped everything it started.
 */
export interface Runner {
  readonly kind: Experiment['runner'];
  run(spec: RunSpec): Promise<RunOutcome>;
  /**
   * Why no job of this runner can start now (e.g. the Docker Engine is unreachable), or
   * undefined. Such jobs wait in the queue without using a try.
   */
  unavailable?(): Promise<string | undefined>;
  /** Releases what the runner holds (helper processes, connections); running jobs are not touched. */
  close?(): void;
}
