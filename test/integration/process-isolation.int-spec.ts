import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Experiment } from '../../libs/jobs/src/experiments/experiment';
import { JobIsolation, type IsolationMode } from '../../libs/jobs/src/runner/isolation';
import { DirectLauncher, HelperLauncher, type Launcher } from '../../libs/jobs/src/runner/launcher';
import { ProcessRunner } from '../../libs/jobs/src/runner/process.runner';
import type { RunSpec } from '../../libs/jobs/src/runner/runner';
import { jobPathsIn } from '../../libs/jobs/src/store/results.store';

/**
 * The process runner's isolation on this host, as root (as CI runs): each way of keeping a job's
 * processes together (a cgroup v2, a cgroup v1 freezer, the /proc fallback), through both
 * launchers, against jobs that try to outlive their end. Needs root and cgroups mounted
 * read-write (CI's container and this machine have both); fails, saying so, without them.
 */
jest.setTimeout(60_000);

if (process.getuid?.() !== 0)
  throw new Error('these tests need root (cgroups): run them as CI does');
const tag = randomBytes(4).toString('hex');
const root = mkdtempSync(path.join(tmpdir(), 'gsc-iso-'));
chmodSync(root, 0o755);
let n = 0;

/** Live (not zombie) processes whose command line contains `token`. */
function liveWith(token: string): number[] {
  const live: number[] = [];
  for (const d of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'latin1').split('\0').join(' ');
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (cmd.includes(token) && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z')
        live.push(Number(d));
    } catch {
      /* exited meanwhile */
    }
  }
  return live;
}

const killAll = (token: string) => {
  for (const pid of liveWith(token)) process.kill(pid, 'SIGKILL');
};

/** A job running `script` with sh; `token` is a sleep length only its holders use. */
function spec(
  script: string,
  signal = new AbortController().signal,
  extra: Partial<Experiment> = {},
) {
  const dir = path.join(root, `job-${++n}`);
  for (const d of ['', 'input', 'output', 'logs']) mkdirSync(path.join(dir, d));
  const s: RunSpec = {
    jobId: `${tag}-${n}`,
    experiment: {
      name: 'iso',
      runner: 'process',
      command: ['sh', '-c', script],
      gpus: 0,
      attempts: 1,
      env: {},
      params: {},
      file: 'iso.yaml',
      ...extra,
    },
    paths: jobPathsIn(dir),
    gpus: [],
    user: { uid: 0 },
    signal,
    onProgress: () => undefined,
  };
  return s;
}

/** Holders that ignore SIGTERM: a new session, a double fork, one with an empty environment. */
const holders = (t: string) =>
  `hold='trap "" TERM HUP; exec sleep ${t}'; ` +
  `setsid sh -c "$hold" </dev/null >/dev/null 2>&1 & ` +
  `sh -c "setsid sh -c '$hold' </dev/null >/dev/null 2>&1 &"; ` +
  `setsid env -i sh -c "$hold" </dev/null >/dev/null 2>&1 & sleep 0.3; `;

const token = () => `400.${Math.floor(Math.random() * 1e6)}`;

/** Every isolation made here: their (empty) cgroup folders go at the end, whatever ran. */
const made: JobIsolation[] = [];
afterAll(() => made.forEach((i) => i.close()));

const launchers: [string, () => Launcher][] = [
  ['directly', () => new DirectLauncher()],
  ['through the helper', () => new HelperLauncher()],
];

describe.each(['cgroup2', 'cgroup1', 'proc'] as IsolationMode[])('isolation by %s', (mode) => {
  const isolation = JobIsolation.detect({
    workerName: `it-${tag}`,
    dataFolder: path.join(root, mode),
    prefer: [mode],
  });
  made.push(isolation);

  it('is available here, as asked', () => {
    expect(isolation.mode).toBe(mode);
    if (mode !== 'proc') expect(existsSync(isolation.base!)).toBe(true);
  });

  describe.each(launchers)('spawning %s', (_how, makeLauncher) => {
    const runner = new ProcessRunner({ killGraceMs: 300, launcher: makeLauncher(), isolation });
    afterAll(() => runner.close());

    it('kills every process the job left when it exits 0, and removes its cgroup', async () => {
      const t = token();
      const s = spec(`${holders(t)} echo done; exit 0`);
      try {
        expect(await runner.run(s)).toMatchObject({ kind: 'exited', exitCode: 0 });
        expect(liveWith(`sleep ${t}`)).toEqual([]);
        if (mode !== 'proc')
          expect(readdirSync(isolation.base!).filter((f) => f.startsWith('job-'))).toEqual([]);
        expect(readFileSync(s.paths.log, 'utf8')).toBe('done\n');
      } finally {
        killAll(`sleep ${t}`);
      }
    });

    it('kills them all on cancel, though they ignore SIGTERM', async () => {
      const t = token();
      const ctl = new AbortController();
      const s = spec(`${holders(t)} trap "" TERM; sleep ${t}`, ctl.signal);
      try {
        setTimeout(() => ctl.abort('cancelled'), 600);
        expect(await runner.run(s)).toMatchObject({ kind: 'aborted', reason: 'cancelled' });
        expect(liveWith(`sleep ${t}`)).toEqual([]);
      } finally {
        killAll(`sleep ${t}`);
      }
    });

    it('kills them all at the timeout', async () => {
      const t = token();
      const s = spec(`${holders(t)} sleep ${t}`, undefined, { timeoutMs: 600 });
      try {
        expect((await runner.run(s)).kind).toBe('timeout');
        expect(liveWith(`sleep ${t}`)).toEqual([]);
      } finally {
        killAll(`sleep ${t}`);
      }
    });
  });

  it('kills the jobs of a spawn helper that dies, from the daemon', async () => {
    const launcher = new HelperLauncher();
    const runner = new ProcessRunner({ killGraceMs: 300, launcher, isolation });
    const t = token();
    const s = spec(`${holders(t)} sleep ${t}`);
    let pid = 0;
    s.onStarted = (i) => (pid = i.pid);
    try {
      const run = runner.run(s);
      // The start message may come after the processes exist: both are waited for.
      while (!pid || liveWith(`sleep ${t}`).length < 4) await new Promise((r) => setTimeout(r, 20));
      process.kill(launcher.helperPid!, 'SIGKILL');
      expect(await run).toMatchObject({ kind: 'error', message: 'spawn helper exited' });
      expect(liveWith(`sleep ${t}`)).toEqual([]);
    } finally {
      launcher.close();
      killAll(`sleep ${t}`);
    }
  });

  if (mode !== 'proc') {
    it.each([
      ['dot-dot segments', '../../../../etc'],
      ['a slash', 'a/../../b'],
      ['a NUL', 'x\0y'],
      ['only a dot', '.'],
      ['nothing', ''],
    ])("keeps the cgroup of a job id of %s inside this worker's folder", (_what, id) => {
      const s = isolation.specFor(id);
      if (s.kind === 'proc') throw new Error('expected a cgroup');
      expect(path.dirname(s.dir)).toBe(isolation.base);
      expect(path.basename(s.dir)).toMatch(/^job-[0-9a-f]{64}$/);
    });

    it('kills and removes the job cgroups a previous run left (reconciliation at start)', async () => {
      const t = token();
      const left = isolation.specFor('left-behind');
      if (left.kind === 'proc') throw new Error('expected a cgroup');
      mkdirSync(left.dir);
      const child = spawn('sleep', [t], { detached: true, stdio: 'ignore' });
      child.unref();
      writeFileSync(path.join(left.dir, 'cgroup.procs'), String(child.pid));
      expect(liveWith(`sleep ${t}`)).toHaveLength(1);
      try {
        expect(await isolation.sweep()).toBe(1);
        expect(liveWith(`sleep ${t}`)).toEqual([]);
        expect(existsSync(left.dir)).toBe(false);
      } finally {
        killAll(`sleep ${t}`);
      }
    });
  }
});

describe('a root daemon with JOB_UID', () => {
  it('hands output/ to JOB_UID: a job running as 1000 writes there, and only there', async () => {
    const isolation = JobIsolation.detect({ workerName: `it-${tag}-uid`, dataFolder: root });
    const runner = new ProcessRunner({ killGraceMs: 300, isolation });
    const s = spec(
      'id -u > "$JOB_OUTPUT/uid.txt"; echo x >> "$JOB_DIR/job.json" 2>/dev/null && echo WROTE; exit 0',
    );
    writeFileSync(path.join(s.paths.dir, 'job.json'), '{}');
    s.user = { uid: 1000, gid: 1000 };
    try {
      expect(await runner.run(s)).toMatchObject({ kind: 'exited', exitCode: 0 });
      expect(statSync(s.paths.output)).toMatchObject({ uid: 1000, gid: 1000 });
      expect(readFileSync(path.join(s.paths.output, 'uid.txt'), 'utf8')).toBe('1000\n');
      expect(readFileSync(s.paths.log, 'utf8')).not.toContain('WROTE');
    } finally {
      runner.close();
      isolation.close();
    }
  });
});
