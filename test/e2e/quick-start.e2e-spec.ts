import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT } from '../support/daemon';
import { isolatedNetwork, type Netns } from '../support/host';
import { waitUntil } from '../support/system';

jest.setTimeout(300_000);

/** The ```sh blocks of the README's "Quick start" section, in order. */
function quickStart(): string[] {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('\n## Quick start\n');
  const end = readme.indexOf('\n## ', start + 1);
  return [...readme.slice(start, end).matchAll(/```sh\n([\s\S]*?)\n```/g)].map((m) => m[1]);
}

/**
 * The README's quick start on a fresh clone (issue #16.1): `git clone` of this checkout's HEAD
 * (uncommitted changes are not in it, as in CI), its set-up step exactly as written (`npm ci`:
 * it needs the npm registry, and reuses the npm cache), `npm start`, then every curl of the
 * quick start, as one script. npm start's fixed ports (8000, 8001, 8080, 9464) are in a network
 * namespace of this test's own, so nothing else on the machine is in the way. No Docker Engine
 * answers (DOCKER_HOST names none): the quick start must work without one (issue #16.7).
 */
describe('README quick start on a fresh clone: npm ci, npm start, every curl', () => {
  const blocks = quickStart();
  const work = mkdtempSync(path.join(tmpdir(), 'gsc-quick-start-'));
  const clone = path.join(work, 'gpu-sidecar');
  let net: Netns;
  let start: ChildProcess | undefined;
  let startLog = '';
  const env = {
    PATH: `${path.dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    HOME: process.env.HOME ?? '/root',
    LANG: 'C.UTF-8',
    DOCKER_HOST: 'unix:///nonexistent/docker.sock',
  };
  /** Runs a shell script in the clone, inside the namespace. */
  const inside = (script: string, timeout = 60_000) =>
    spawnSync(net.prefix[0], [...net.prefix.slice(1), 'bash', '-c', script], {
      cwd: clone,
      env,
      encoding: 'utf8',
      timeout,
    });

  afterAll(async () => {
    if (start?.pid) {
      try {
        process.kill(-start.pid, 'SIGINT');
      } catch {
        /* already gone */
      }
    }
    await net?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('the quick start says `npm ci && npm start`, then curls', () => {
    expect(blocks[0].split('\n')[0]).toMatch(/^npm ci && npm start +#/);
    expect(blocks[1]).toContain('curl');
  });

  it('git clone, then `npm ci` as written', () => {
    const c = spawnSync('git', ['clone', '--quiet', ROOT, clone], { encoding: 'utf8' });
    expect([c.status, c.stderr]).toEqual([0, '']);
    const ci = spawnSync('bash', ['-c', blocks[0].split('\n')[0].split(' && ')[0]], {
      cwd: clone,
      env,
      encoding: 'utf8',
      timeout: 240_000,
    });
    expect([ci.status, ci.stderr.split('\n').filter((l) => /ERR!/.test(l))]).toEqual([0, []]);
  });

  it('`npm start` builds and starts both daemons; /test answers through the tunnel', async () => {
    net = isolatedNetwork('quick');
    start = spawn(net.prefix[0], [...net.prefix.slice(1), 'npm', 'start'], {
      cwd: clone,
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    start.stdout!.on('data', (d: Buffer) => (startLog += d.toString()));
    start.stderr!.on('data', (d: Buffer) => (startLog += d.toString()));
    await waitUntil(
      'npm start to answer /test',
      () => {
        if (start!.exitCode !== null) throw new Error(`npm start exited:\n${startLog}`);
        return inside('curl -sf http://127.0.0.1:8001/test').stdout === '{"response":"ok"}';
      },
      180_000,
    );
    expect(startLog).toContain('No Docker Engine answers at unix:///nonexistent/docker.sock');
  });

  it('every curl of the quick start, as one script, answers what the README says', () => {
    const r = inside(`set -e\n${blocks[1]}`);
    expect([r.status, r.stderr]).toEqual([0, expect.any(String)]);
    expect(r.stdout.startsWith('{"response":"ok"}')).toBe(true);
    expect(r.stdout).toMatch(/event: state\ndata: \{[^\n]*"state":"succeeded"/);
    expect(r.stdout.endsWith('Hello, Ada!\n')).toBe(true);
  });

  it('without Docker the worker is not down: /health 200, `gpu-sidecar status` exits 0', () => {
    const health = inside("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/health");
    expect(health.stdout).toBe('200');
    const status = inside('NO_COLOR=1 bin/gpu-sidecar status');
    expect([status.status, status.stdout]).toEqual([0, expect.stringContaining('ready')]);
  });

  it("plain `gpu-sidecar doctor` in the clone checks npm start's configuration and passes (issue #16.3)", () => {
    const r = inside('bin/gpu-sidecar doctor');
    expect(r.stdout).toContain(`configuration: npm start's ${clone}/.local/worker.env`);
    expect(r.stdout).toContain(`configuration: npm start's ${clone}/.local/relay.env`);
    expect(r.stdout).toMatch(/^warn docker: .*no installed experiment runs in Docker/m);
    expect([r.status, r.stdout]).toEqual([0, expect.not.stringContaining('problem(s) found')]);
  });
});
