import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JobsClient } from '../../libs/jobs/src/testing/client';
import { runCli, type DaemonProcess } from '../support/daemon';
import { keygen, workerEnvIn } from '../support/system';
import { legitLoop, type LegitFigures } from './support';

/** A built worker (its embedded Redis) with its own experiments, for attacks by jobs. */
export interface JobHost {
  dir: string;
  data: string;
  api: JobsClient;
  daemon: DaemonProcess;
  /** The job's folder on disk. */
  jobDir(experiment: string, id: string): string;
  /** The job's log as it is on disk. */
  log(experiment: string, id: string): string;
  stop(): Promise<void>;
  /**
   * Stops the worker (SIGTERM) and starts it again, same environment and DATA_FOLDER (its
   * embedded Redis with it); resolves once it logs `worker ready`, rejects if it does not
   * within `timeoutMs` (or exits first). `daemon` is then the new process.
   */
  restart(timeoutMs?: number): Promise<void>;
}

/**
 * Starts a worker whose experiments are `experiments` (file name → YAML). Its folder is
 * searchable by everyone (0755), as a DATA_FOLDER must be when jobs run as another user.
 */
export async function startJobHost(
  experiments: (dir: string) => Record<string, string>,
  extra: Record<string, string> = {},
  files: Record<string, string> = {},
): Promise<JobHost> {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-attack-jobs-'));
  chmodSync(dir, 0o755);
  const data = path.join(dir, 'data');
  const exps = path.join(dir, 'experiments');
  mkdirSync(exps);
  for (const [name, text] of Object.entries(experiments(dir)))
    writeFileSync(path.join(exps, name), text);
  for (const [name, text] of Object.entries(files))
    writeFileSync(path.join(dir, name), text, { mode: 0o755 });
  const w = await workerEnvIn(dir, keygen(dir), {
    folders: { data, experiments: exps },
    // Its own name: a worker reconciles every container of its name, on a shared engine too.
    name: `attack-jobs-${randomBytes(4).toString('hex')}`,
    extra: { WORKER_CONCURRENCY: '4', ...extra },
  });
  let daemon = runCli(['worker'], w.env, dir);
  await daemon.waitForLog('worker ready', 60_000);
  return {
    dir,
    data,
    api: new JobsClient(`http://127.0.0.1:${w.api}`),
    get daemon() {
      return daemon;
    },
    jobDir: (experiment, id) => path.join(data, 'jobs', experiment, id),
    log: (experiment, id) =>
      readFileSync(path.join(data, 'jobs', experiment, id, 'logs', 'output.log'), 'utf8'),
    stop: async () => void (await daemon.stop()),
    restart: async (timeoutMs = 60_000) => {
      await daemon.stop();
      daemon = runCli(['worker'], w.env, dir);
      await daemon.waitForLog('worker ready', timeoutMs);
    },
  };
}

/**
 * An experiment file (for startJobHost) whose job is the Node script `<dir>/<name>.js` (the
 * host's folder, where startJobHost's `files` are written), with the given timeout.
 */
export function nodeScriptExperiment(name: string, dir: string, timeout: string): string {
  return (
    `name: ${name}\nrunner: process\ncommand: ["${process.execPath}", "${dir}/${name}.js"]\n` +
    `timeout: ${timeout}\nparams: { type: object }\n`
  );
}

/**
 * The legitimate client during an attack: `GET /test` on the worker's API every 100 ms, each
 * timed, until `stop()`, which returns the figures.
 */
export function legitimateClient(api: JobsClient): { stop(): Promise<LegitFigures> } {
  return legitLoop(async () => (await api.call('GET', '/test')).status === 200, 100);
}

/** One process from /proc: its state, parent, command line and environment. */
interface Proc {
  pid: number;
  state: string;
  cmdline: string;
  environ: string;
}

function procs(): Proc[] {
  const out: Proc[] = [];
  for (const d of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      out.push({
        pid: Number(d),
        state: stat.slice(stat.lastIndexOf(')') + 2)[0],
        cmdline: readFileSync(`/proc/${d}/cmdline`, 'latin1').split('\0').join(' ').trim(),
        environ: readFileSync(`/proc/${d}/environ`, 'latin1'),
      });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/**
 * Live processes (zombies are dead) that belong to job `id`: its id in the command line (the
 * holders name themselves after it) or `JOB_ID=<id>` in the environment.
 */
export function jobProcesses(id: string): string[] {
  return procs()
    .filter((p) => p.state !== 'Z')
    .filter((p) => p.cmdline.includes(id) || p.environ.split('\0').includes(`JOB_ID=${id}`))
    .map((p) => `${p.pid}: ${p.cmdline}`);
}

/** Kills what `jobProcesses` finds (cleanup, so an old code's leftovers never outlive the test). */
export function killJobProcesses(id: string): void {
  for (const line of jobProcesses(id)) {
    try {
      process.kill(Number(line.split(':')[0]), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** VmHWM (peak resident set) of a process, in bytes. */
export function peakRss(pid: number): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** The worker's spawn helper: its child whose command line names the helper. */
export function helperPid(workerPid: number): number | undefined {
  return procs().find((p) => {
    try {
      const stat = readFileSync(`/proc/${p.pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      return ppid === workerPid && p.cmdline.includes('spawn-helper');
    } catch {
      return false;
    }
  })?.pid;
}

/**
 * The pids cgroup folder of process `pid` (cgroup v1 `pids` hierarchy, or v2), where
 * `pids.current` counts its container's processes and `pids.events` the forks refused.
 */
export function pidsCgroup(pid: number): string | undefined {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes('pids'));
  const v2 = lines.find((l) => l.startsWith('0::'));
  const candidates = [
    ...(v1 ? [path.join('/sys/fs/cgroup/pids', v1.split(':')[2])] : []),
    ...(v2
      ? ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].map((m) => path.join(m, v2.slice(3)))
      : []),
  ];
  return candidates.find((d) => existsSync(path.join(d, 'pids.current')));
}
