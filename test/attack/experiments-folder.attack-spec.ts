import { execFileSync } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JobsClient } from '../../libs/jobs/src/testing/client';
import { runCli, type DaemonProcess } from '../support/daemon';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, waitUntil, workerEnvIn } from '../support/system';
import { ATTACK_SCALE, recordAttack, timed, type LegitFigures } from './support';

jest.setTimeout(180_000);

/**
 * EXPERIMENTS_DIR holding what it should not, while the worker reads it again and again: FIFOs
 * that no one ever writes (an open without O_NONBLOCK waits forever, and a few of them take
 * every libuv thread, so job logs and job.json stop too), links to endless devices, a sparse
 * 2 GB file, YAML that costs the parser seconds (1 MiB of distinct keys: about a minute in the
 * daemon's own thread) and an alias bomb; meanwhile a file is rewritten as fast as possible and
 * SIGHUP comes every few rewrites. None of it may become an experiment, stall the readings (the
 * last rewrite must be read), or keep a legitimate user's jobs from running.
 */
/**
 * The descriptors of process `pid` open on a FIFO under `folder`, or on /dev/zero or /dev/urandom
 * (the worker opens the regular files there while it reads them: those do not count).
 */
function heldOpen(pid: number, folder: string): string[] {
  const held: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    if (target.startsWith(`${folder}/fifo-`) || target === '/dev/zero' || target === '/dev/urandom')
      held.push(target);
  }
  return held;
}

describe('attacks through EXPERIMENTS_DIR', () => {
  let redis: TestRedis;
  let dir: string;

  beforeAll(async () => {
    redis = await startRedis();
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-attack-experiments-'));
  });

  afterAll(() => {
    redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('experiments-folder: hostile files and a rewrite storm are read without a stall', async () => {
    const experiments = path.join(dir, 'experiments');
    mkdirSync(experiments);
    writeFileSync(
      path.join(experiments, 'hello.yaml'),
      'name: hello\nrunner: process\ncommand: [sh, -c, \'echo hi > "$JOB_OUTPUT/hi.txt"\']\nparams: { type: object }\n',
    );
    const storm = (n: number) =>
      `name: storm\nrunner: process\ncommand: ["true"]\ntimeout: ${n}s\nparams: { type: object }\n`;
    writeFileSync(path.join(experiments, 'storm.yaml'), storm(1));
    const w = await workerEnvIn(dir, keygen(dir), {
      folders: { data: path.join(dir, 'data'), experiments },
      redisUrl: redis.url,
    });
    const api = new JobsClient(`http://127.0.0.1:${w.api}`);
    const worker: DaemonProcess = runCli(['worker'], w.env);
    try {
      await worker.waitForLog('worker ready', 60_000);
      const pid = worker.child.pid!;
      // What the worker holds open on the folder and the devices, sampled during the attack
      // (anything open before it, such as a library's /dev/urandom, is not counted).
      const before = heldOpen(pid, experiments).length;
      let mostHeld = 0;
      const sample = () =>
        (mostHeld = Math.max(mostHeld, heldOpen(pid, experiments).length - before));

      // The legitimate user: a job submitted and run to its end, back to back.
      const legit: LegitFigures = { tried: 0, ok: 0, latenciesMs: [] };
      let attacking = true;
      const user = (async () => {
        while (attacking) {
          const r = await timed(async () => {
            const id = await api.submit('hello', {});
            return (await api.waitFor(id, ['succeeded', 'failed'], 10_000)).state === 'succeeded';
          });
          legit.tried++;
          if (r.ok) legit.ok++;
          legit.latenciesMs.push(r.ms);
        }
      })();

      const fifos = ATTACK_SCALE.full ? 32 : 8;
      for (let i = 0; i < fifos; i++)
        execFileSync('mkfifo', [path.join(experiments, `fifo-${i}.yaml`)]);
      symlinkSync('/dev/zero', path.join(experiments, 'zero.yaml'));
      symlinkSync('/dev/urandom', path.join(experiments, 'urandom.yaml'));
      writeFileSync(path.join(experiments, 'huge.yaml'), 'name: huge\n');
      truncateSync(path.join(experiments, 'huge.yaml'), 2 * 1024 ** 3);
      const keys = Array.from({ length: 80_000 }, (_, i) => `k${i}: ${i}`).join('\n');
      writeFileSync(path.join(experiments, 'keys.yaml'), keys.slice(0, 1024 * 1024 - 100));
      writeFileSync(path.join(experiments, 'deep.yaml'), '['.repeat(1024 * 1024 - 1));
      let bomb = 'a: &a [x, x, x, x, x, x, x, x, x]\n';
      for (let i = 0, prev = 'a'; i < 9; prev = `b${i}`, i++) {
        bomb += `b${i}: &b${i} [${Array(9).fill(`*${prev}`).join(', ')}]\n`;
      }
      writeFileSync(path.join(experiments, 'bomb.yaml'), bomb);
      const hostile = fifos + 6;

      const rewrites = ATTACK_SCALE.full ? 2_000 : 100;
      let sighups = 0;
      for (let n = 2; n <= rewrites; n++) {
        writeFileSync(path.join(experiments, '.storm.tmp'), storm(n));
        renameSync(path.join(experiments, '.storm.tmp'), path.join(experiments, 'storm.yaml'));
        if (n % 10 === 0) {
          worker.child.kill('SIGHUP');
          sighups++;
          sample();
          // Let the event loop turn, as a person's edits would.
          await new Promise((r) => setImmediate(r));
        }
      }
      // The folder as it is now must be read: the last rewrite, and every hostile file reported
      // (a reading that listed the folder early may read storm.yaml late). Every reading takes
      // up to 2 s for each of the two slow files, so within a few readings.
      const settled = async () => {
        const list = (await api.call('GET', '/experiments')).body as {
          name: string;
          timeout: number;
        }[];
        const health = (await api.call('GET', '/health')).body as { problems: string[] };
        const reported = health.problems.filter((p) => p.startsWith('experiments: ')).length;
        return (
          list.find((e) => e.name === 'storm')?.timeout === rewrites * 1000 && reported === hostile
        );
      };
      let lastRead = true;
      await waitUntil(
        'the folder as it is now read',
        async () => {
          sample();
          return settled();
        },
        60_000,
      ).catch(() => (lastRead = false));
      attacking = false;
      await user;

      const installed = ((await api.call('GET', '/experiments')).body as { name: string }[]).map(
        (e) => e.name,
      );
      const problems = (await api.call('GET', '/health')).body.problems as string[];
      const alive = worker.child.exitCode === null;
      recordAttack('experiments-folder', {
        attack: `${hostile} hostile files in EXPERIMENTS_DIR (${fifos} FIFOs, /dev/zero and /dev/urandom links, 2 GB sparse, 1 MiB of keys, 1 MiB of '[', alias bomb); ${rewrites} rewrites with ${sighups} SIGHUPs`,
        times: hostile + rewrites + sighups,
        gotThrough:
          installed.filter((n) => n !== 'hello' && n !== 'storm').length +
          (lastRead ? 0 : 1) +
          (alive ? 0 : 1) +
          (legit.tried - legit.ok) +
          mostHeld,
        counted:
          'hostile files installed, the folder as it is now never read, a dead worker, legitimate jobs that failed, FIFOs or devices held open',
        legit,
      });
      expect({ installed, lastRead, alive, mostHeld }).toEqual({
        installed: ['hello', 'storm'],
        lastRead: true,
        alive: true,
        mostHeld: 0,
      });
      expect(legit.tried).toBeGreaterThan(0);
      expect(legit.ok).toBe(legit.tried);
      // Each hostile file is named, with what is wrong, as a problem of its own.
      const about = (file: string) => problems.find((p) => p.includes(`${experiments}/${file}:`));
      expect(about('fifo-0.yaml')).toContain('is a FIFO: only regular files are read (not loaded)');
      expect(about('zero.yaml')).toContain('is not a regular file');
      expect(about('huge.yaml')).toContain('is larger than 1048576 bytes');
      // Given up at the time bound, or at the heap bound if that comes first.
      const tooCostly = /took more than 2 s to parse|could not be parsed: .*memory limit/;
      expect(about('keys.yaml')).toMatch(tooCostly);
      expect(about('deep.yaml')).toMatch(new RegExp(`${tooCostly.source}|is not valid YAML`));
      expect(about('bomb.yaml')).toContain('Excessive alias count');
      expect(problems.filter((p) => p.startsWith('experiments: '))).toHaveLength(hostile);
    } finally {
      await worker.stop('SIGKILL');
    }
  });
});
