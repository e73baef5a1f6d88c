import { createHash, randomBytes } from 'node:crypto';
import { execFileSync, spawn as spawnChild } from 'node:child_process';
import {
  chownSync,
  closeSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN } from '../support/daemon';
import { ATTACK_SCALE, recordAttack, timed, type LegitFigures } from './support';

jest.setTimeout(120_000);

/**
 * `gpu-sidecar install` runs as root, writes the tunnel key and hands files to the service user:
 * the built CLI, run as a process with --root into temporary roots, under the two ways a local
 * attacker (or a mistake) could turn that against the host. After every attempt the legitimate
 * admin installs into a clean root, and that must work.
 */
const ROUNDS = ATTACK_SCALE.full ? 10 : 2;

function newRoot(): string {
  const root = mkdtempSync(path.join(tmpdir(), 'gsc-attack-install-'));
  mkdirSync(path.join(root, 'etc'));
  for (const f of ['passwd', 'group', 'shadow', 'gshadow'])
    copyFileSync(path.join('/etc', f), path.join(root, 'etc', f));
  return root;
}

/** Runs `gpu-sidecar install ...args --root root`, `input` on stdin; resolves to its exit code. */
function install(
  root: string,
  args: string[],
  input: Buffer | string = '',
): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawnChild(BIN, ['install', ...args, '--root', root], {
      env: { PATH: `${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin` },
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    child.stdin.end(input);
    child.once('exit', (code) => resolve(code));
  });
}

/** What one watched install did: exit code, time, peak memory, stderr, killed by the watch. */
interface Watched {
  code: number | null;
  ms: number;
  peakMb: number;
  stderr: string;
  killed: boolean;
}

/** Past these an install counts as hung or flooded, and is killed (the machine is shared). */
const WATCH = { ms: 5_000, peakMb: 256 };

/**
 * Runs `gpu-sidecar install ...args --root root` with `stdin` (a file opened for it, or nothing
 * written), watching it: its peak resident memory (VmHWM) every 20 ms, and a kill past
 * WATCH's time or memory.
 */
function installWatched(root: string, args: string[], stdin?: string): Promise<Watched> {
  return new Promise((resolve) => {
    const fd = stdin === undefined ? undefined : openSync(stdin, 'r');
    const t0 = performance.now();
    const child = spawnChild(BIN, ['install', ...args, '--root', root], {
      env: { PATH: `${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin` },
      stdio: [fd ?? 'pipe', 'ignore', 'pipe'],
    });
    if (fd !== undefined) closeSync(fd);
    else child.stdin!.end();
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let peakMb = 0;
    let killed = false;
    const watch = setInterval(() => {
      try {
        const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peakMb = Math.max(peakMb, Number(m[1]) / 1024);
      } catch {
        /* gone */
      }
      if (peakMb > WATCH.peakMb || performance.now() - t0 > WATCH.ms) {
        killed = true;
        child.kill('SIGKILL');
      }
    }, 20);
    child.once('close', (code) => {
      clearInterval(watch);
      resolve({ code, ms: performance.now() - t0, peakMb, stderr, killed });
    });
  });
}

const state = (p: string) => {
  if (!existsSync(p)) return 'absent';
  const st = lstatSync(p);
  return `${st.uid}:${st.gid}:${(st.mode & 0o7777).toString(8)}:${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
};

describe('install under attack', () => {
  const legit: LegitFigures = { tried: 0, ok: 0, latenciesMs: [] };
  /** The admin's own install into a clean root, timed; counts into `legit`. */
  const admin = async () => {
    const root = newRoot();
    const t = await timed(
      async () =>
        (await install(root, ['worker'])) === 0 &&
        existsSync(path.join(root, 'etc/gpu-sidecar/tunnel.key')),
    );
    rmSync(root, { recursive: true, force: true });
    legit.tried++;
    if (t.ok) legit.ok++;
    legit.latenciesMs.push(t.ms);
  };
  beforeEach(() => {
    legit.tried = 0;
    legit.ok = 0;
    legit.latenciesMs = [];
  });

  it('links planted where install writes (key, env file, unit, state folder): nothing written or handed over through them', async () => {
    const paths = [
      'etc/gpu-sidecar/tunnel.key',
      'etc/gpu-sidecar/worker.env',
      'etc/systemd/system/gpu-sidecar-worker.service',
      'var/lib/gpu-sidecar',
    ];
    let times = 0;
    let through = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const p of paths) {
        for (const kind of ['an existing file of another owner', 'a name that does not exist']) {
          const root = newRoot();
          const victim = path.join(root, 'victim');
          writeFileSync(victim, 'not yours\n', { mode: 0o644 });
          const target = kind.startsWith('an existing') ? victim : path.join(root, 'planted');
          const before = state(target);
          mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
          symlinkSync(target, path.join(root, p));
          await install(root, ['worker']);
          times++;
          if (state(target) !== before) through++;
          rmSync(root, { recursive: true, force: true });
          await admin();
        }
      }
    }
    const figures = {
      attack: 'a symbolic link planted at each path install writes, to a file or a free name',
      times,
      gotThrough: through,
      counted: 'link targets written, chowned or chmodded',
      legit,
    };
    recordAttack('install-planted-links', figures);
    expect(figures.gotThrough).toBe(0);
    expect(legit.ok).toBe(legit.tried);
  });

  it('keys that are not the key: empty, short, an error message, oversized, another key over the installed one', async () => {
    const key = randomBytes(32);
    const bad: Array<[string, Buffer | string]> = [
      ['empty', ''],
      ['short', randomBytes(31)],
      ['an ssh error', 'sudo: a terminal is required to read the password\n'],
      ['oversized', randomBytes(4097)],
      ['another key', randomBytes(32)],
    ];
    let times = 0;
    let through = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const [what, input] of bad) {
        const root = newRoot();
        const file = path.join(root, 'etc/gpu-sidecar/tunnel.key');
        // "another key" meets an installed one; the others a host with none yet.
        if (what === 'another key')
          expect(
            await install(root, ['relay', '--connect', 'ws://gpu-host:8080', '--key', '-'], key),
          ).toBe(0);
        const before = state(file);
        await install(root, ['relay', '--connect', 'ws://gpu-host:8080', '--key', '-'], input);
        times++;
        if (state(file) !== before) through++;
        rmSync(root, { recursive: true, force: true });
        await admin();
      }
    }
    const figures = {
      attack: 'install relay --key - fed what is not the worker key (5 kinds)',
      times,
      gotThrough: through,
      counted: 'key files written or replaced',
      legit,
    };
    recordAttack('install-bad-keys', figures);
    expect(figures.gotThrough).toBe(0);
    expect(legit.ok).toBe(legit.tried);
  });

  it('key sources that would hang or flood install: FIFOs, /dev/zero, a 2 GB sparse file, as --key FILE and on stdin', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'gsc-attack-keysrc-'));
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    symlinkSync(fifo, path.join(dir, 'link-to-fifo'));
    const sparse = path.join(dir, 'sparse');
    writeFileSync(sparse, '');
    truncateSync(sparse, 2_000_000_000);
    // [what, --key value, file on stdin]
    const hostile: Array<[string, string, string?]> = [
      ['a FIFO no one writes', fifo],
      ['a link to that FIFO', path.join(dir, 'link-to-fifo')],
      ['/dev/zero', '/dev/zero'],
      ['a 2 GB sparse file', sparse],
      ['/dev/zero on stdin', '-', '/dev/zero'],
      ['a 2 GB sparse file on stdin', '-', sparse],
    ];
    // The admin's own: a key copied into their home, another owner's, 0644, and a link to it.
    const home = path.join(dir, 'home');
    mkdirSync(home);
    const key = randomBytes(32);
    const copy = path.join(home, 'tunnel.key');
    writeFileSync(copy, key, { mode: 0o644 });
    chownSync(copy, 1000, 1000);
    symlinkSync(copy, path.join(home, 'link.key'));
    const legit: LegitFigures = { tried: 0, ok: 0, latenciesMs: [] };
    let times = 0;
    let through = 0;
    const seen: Record<string, { ms: number; peakMb: number; stderr: string }> = {};
    for (let round = 0; round < ROUNDS; round++) {
      for (const [what, given, stdin] of hostile) {
        const root = newRoot();
        const file = path.join(root, 'etc/gpu-sidecar/tunnel.key');
        const r = await installWatched(
          root,
          ['relay', '--connect', 'ws://gpu-host:8080', '--key', given],
          stdin,
        );
        times++;
        const named =
          stdin === undefined ? r.stderr.includes(given) : /standard input/.test(r.stderr);
        const ok = !r.killed && r.code === 2 && named && !existsSync(file);
        if (!ok) through++;
        seen[what] = {
          ms: Math.round(r.ms),
          peakMb: Math.round(r.peakMb),
          stderr: r.stderr.trim(),
        };
        rmSync(root, { recursive: true, force: true });
      }
      for (const given of [copy, path.join(home, 'link.key')]) {
        const root = newRoot();
        const t = await timed(async () => {
          const r = await installWatched(root, [
            'relay',
            '--connect',
            'ws://gpu-host:8080',
            '--key',
            given,
          ]);
          const file = path.join(root, 'etc/gpu-sidecar/tunnel.key');
          return r.code === 0 && existsSync(file) && readFileSync(file).equals(key);
        });
        rmSync(root, { recursive: true, force: true });
        legit.tried++;
        if (t.ok) legit.ok++;
        legit.latenciesMs.push(t.ms);
      }
    }
    rmSync(dir, { recursive: true, force: true });
    const figures = {
      attack:
        'install relay --key given a FIFO, a link to it, /dev/zero, a 2 GB sparse file (as FILE and on stdin)',
      times,
      gotThrough: through,
      counted: `installs not refused with exit 2 naming the source, or past ${WATCH.ms / 1000} s or ${WATCH.peakMb} MB`,
      legit,
      extra: seen,
    };
    recordAttack('install-key-sources', figures);
    expect(figures.gotThrough).toBe(0);
    expect(legit.ok).toBe(legit.tried);
  });
});
