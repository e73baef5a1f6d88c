import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Experiment } from '../experiments/experiment';
import { DirectLauncher, HelperLauncher } from './launcher';
import { ProcessRunner } from './process.runner';
import { isNoSpace, jobPathsIn } from '../store/results.store';
import { exitMark, type RunSpec } from './runner';
import type { ProgressUpdate } from './progress';

function spec(
  script: string,
  extra: Partial<Experiment> = {},
  signal = new AbortController().signal,
) {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-run-'));
  for (const d of ['input', 'output', 'logs']) mkdirSync(path.join(dir, d));
  const progress: ProgressUpdate[] = [];
  const s: RunSpec = {
    jobId: 'job-1',
    experiment: {
      name: 't',
      runner: 'process',
      command: ['sh', '-c', script],
      gpus: 0,
      attempts: 1,
      env: { EXTRA: 'x' },
      params: {},
      file: 't.yaml',
      ...extra,
    },
    paths: jobPathsIn(dir),
    gpus: [],
    user: { uid: process.getuid!() },
    signal,
    onProgress: (p) => progress.push(p),
  };
  return { s, progress, log: () => readFileSync(s.paths.log, 'utf8') };
}

/** Processes of group `pgid` that are not zombies (a container's pid 1 may never reap them). */
function liveInGroup(pgid: number): number[] {
  const live: number[] = [];
  for (const d of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid && fields[0] !== 'Z') live.push(Number(d));
    } catch {
      /* exited meanwhile */
    }
  }
  return live;
}

/** Live (not zombie) processes whose command line contains `token`. */
function liveWith(token: string): string[] {
  const live: string[] = [];
  for (const d of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'latin1').split('\0').join(' ');
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (cmd.includes(token) && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z')
        live.push(`${d} ${cmd}`);
    } catch {
      /* exited meanwhile */
    }
  }
  return live;
}

/** Live members of the group once SIGKILL has had time to land (polls up to 2 s). */
async function settledGroup(pgid: number): Promise<number[]> {
  for (let i = 0; i < 40 && liveInGroup(pgid).length > 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  return liveInGroup(pgid);
}

describe.each([
  ['spawning directly', () => new DirectLauncher()],
  ['spawning through the helper process', () => new HelperLauncher()],
])('process runner, %s', (_how, makeLauncher) => {
  const runner = new ProcessRunner({ killGraceMs: 300, launcher: makeLauncher() });
  afterAll(() => runner.close());

  it('runs in the job folder with the documented environment and records the exit code', async () => {
    const { s, log } = spec(
      'pwd; echo "$JOB_ID|$JOB_OUTPUT|$JOB_PARAMS|$EXTRA|[$CUDA_VISIBLE_DEVICES]"; echo err >&2; exit 3',
    );
    expect(await runner.run(s)).toMatchObject({ kind: 'exited', exitCode: 3 });
    expect(log()).toContain(s.paths.dir);
    expect(log()).toContain(`job-1|${s.paths.output}|${s.paths.params}|x|[]`);
    expect(log()).toContain('err');
  });

  it('names the assigned GPUs in CUDA_VISIBLE_DEVICES', async () => {
    const { s, log } = spec('echo "[$CUDA_VISIBLE_DEVICES][$NVIDIA_VISIBLE_DEVICES]"');
    s.gpus = ['1', '3'];
    await runner.run(s);
    expect(log()).toContain('[1,3][1,3]');
  });

  it('turns progress lines into progress updates', async () => {
    const { s, progress } = spec(
      'echo "::progress:: 10 warming up"; echo hi; echo "::progress:: 100"',
    );
    await runner.run(s);
    expect(progress).toEqual([{ percent: 10, message: 'warming up' }, { percent: 100 }]);
  });

  it('stops a job past its timeout, children included', async () => {
    const { s } = spec('sleep 30 & sleep 30; wait', { timeoutMs: 200 });
    const t0 = Date.now();
    expect((await runner.run(s)).kind).toBe('timeout');
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('stops a cancelled job with SIGKILL when it ignores SIGTERM', async () => {
    const ctl = new AbortController();
    const { s } = spec(
      'trap "" TERM; echo started; while true; do sleep 0.05; done',
      {},
      ctl.signal,
    );
    let pid = 0;
    s.onStarted = (i) => (pid = i.pid);
    setTimeout(() => ctl.abort('cancelled'), 200);
    expect(await runner.run(s)).toMatchObject({ kind: 'aborted', reason: 'cancelled' });
    expect(await settledGroup(pid)).toEqual([]);
  });

  it('leaves the exited-0 mark when, and only when, the job exits 0', async () => {
    const ok = spec('echo fine');
    expect(await runner.run(ok.s)).toMatchObject({ kind: 'exited', exitCode: 0 });
    expect(readFileSync(exitMark(ok.s.paths), 'utf8')).toBe('0\n');
    const bad = spec('exit 4');
    expect(await runner.run(bad.s)).toMatchObject({ kind: 'exited', exitCode: 4 });
    expect(existsSync(exitMark(bad.s.paths))).toBe(false);
  });

  it('ends a job whose log cannot be written (no space left) and names the error', async () => {
    const { s } = spec('yes 0123456789abcdef0123456789abcdef');
    s.paths = { ...s.paths, log: '/dev/full' };
    let pid = 0;
    s.onStarted = (i) => (pid = i.pid);
    const out = await runner.run(s);
    expect(out).toMatchObject({ kind: 'error', message: expect.stringMatching(/ENOSPC/) });
    expect(isNoSpace((out as { message: string }).message)).toBe(true);
    expect(await settledGroup(pid)).toEqual([]);
  });

  it('logs a line of 8 MiB without a newline byte for byte, and still reads progress after it', async () => {
    const { s, progress, log } = spec(
      'head -c 8388608 /dev/zero | tr "\\000" x; echo; echo "::progress:: 70 after"',
    );
    expect(await runner.run(s)).toMatchObject({ kind: 'exited', exitCode: 0 });
    expect(log()).toBe(`${'x'.repeat(8 * 1024 * 1024)}\n::progress:: 70 after\n`);
    expect(progress).toEqual([{ percent: 70, message: 'after' }]);
  });

  it('kills what the job left running when it exits: a new session, a double fork, no env', async () => {
    // A sleep of its own length, so that only this test's processes are counted.
    const t = `300.${Date.now() % 1_000_000}`;
    const { s } = spec(
      `setsid sh -c "sleep ${t}" </dev/null >/dev/null 2>&1 & ` +
        `sh -c "setsid sleep ${t} </dev/null >/dev/null 2>&1 &"; ` +
        `setsid env -i sleep ${t} </dev/null >/dev/null 2>&1 & sleep 0.3; exit 0`,
    );
    s.jobId = `escape-${t}`;
    try {
      expect(await runner.run(s)).toMatchObject({ kind: 'exited', exitCode: 0 });
      expect(liveWith(`sleep ${t}`)).toEqual([]);
    } finally {
      for (const p of liveWith(`sleep ${t}`)) process.kill(Number(p.split(' ')[0]), 'SIGKILL');
    }
  });

  it('reports a command that cannot start', async () => {
    const { s } = spec('');
    s.experiment = { ...s.experiment, command: ['/no/such/program'] };
    expect(await runner.run(s)).toMatchObject({
      kind: 'error',
      message: expect.stringContaining('/no/such/program'),
    });
  });
});

describe('spawn helper', () => {
  it('ends a running job with an error and kills its processes when the helper dies, then starts a new helper', async () => {
    const launcher = new HelperLauncher();
    const runner = new ProcessRunner({ killGraceMs: 300, launcher });
    try {
      const { s } = spec('echo started; sleep 30');
      let pid = 0;
      s.onStarted = (i) => (pid = i.pid);
      const run = runner.run(s);
      while (!pid) await new Promise((r) => setTimeout(r, 10));
      process.kill(launcher.helperPid!, 'SIGKILL');
      expect(await run).toMatchObject({ kind: 'error', message: 'spawn helper exited' });
      expect(await settledGroup(pid)).toEqual([]);
      const again = spec('exit 0');
      expect(await runner.run(again.s)).toMatchObject({ kind: 'exited', exitCode: 0 });
    } finally {
      runner.close();
    }
  });
});
