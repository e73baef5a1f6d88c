import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
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
    const child = spawn(BIN, ['install', ...args, '--root', root], {
      env: { PATH: `${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin` },
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    child.stdin.end(input);
    child.once('exit', (code) => resolve(code));
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
});
