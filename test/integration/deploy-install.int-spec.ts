// `gpu-sidecar install worker|relay --root DIR`: what it writes, with which owners and modes, run
// again, and what it refuses (links planted where it writes, keys that are not keys, a different
// key over the installed one). The user is created in DIR/etc/passwd (useradd --prefix), never on
// this machine. The full procedure, daemons running, is test/e2e/deploy-systemd.e2e-spec.ts.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, ROOT } from '../support/daemon';

jest.setTimeout(60_000);

let root: string;
beforeEach(() => {
  root = mkdtempSync(path.join(tmpdir(), 'gsc-install-'));
  mkdirSync(path.join(root, 'etc'));
  // The account files useradd --prefix edits: this machine's, copied.
  for (const f of ['passwd', 'group', 'shadow', 'gshadow'])
    copyFileSync(path.join('/etc', f), path.join(root, 'etc', f));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

function install(args: string[], input?: Buffer | string, uid?: number) {
  const r = spawnSync(BIN, ['install', ...args, '--root', root], {
    input,
    encoding: 'utf8',
    timeout: 30_000,
    uid,
    env: { PATH: `${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin` },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const at = (p: string) => path.join(root, p);
const owner = (p: string) => {
  const st = lstatSync(at(p));
  return `${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8)}`;
};
const account = () => {
  const row = readFileSync(at('etc/passwd'), 'utf8')
    .split('\n')
    .find((l) => l.startsWith('gpu-sidecar:'));
  return row?.split(':');
};
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

describe('install worker --root', () => {
  it('writes the user, folders, key, env file, unit and link with their owners and modes; starts nothing', () => {
    const machinePasswd = sha('/etc/passwd');
    const r = install(['worker', '--gpus', '0,1', '--job-uid', '1000:1000', '--host', 'gpu1.lab']);
    expect([r.code, r.err]).toEqual([0, '']);
    const user = account()!;
    expect(user.slice(5)).toEqual(['/var/lib/gpu-sidecar', '/usr/sbin/nologin']);
    const [uid, gid] = [user[2], user[3]];
    expect({
      etc: owner('etc/gpu-sidecar'),
      experiments: owner('etc/gpu-sidecar/experiments'),
      key: owner('etc/gpu-sidecar/tunnel.key'),
      env: owner('etc/gpu-sidecar/worker.env'),
      state: owner('var/lib/gpu-sidecar'),
      unit: owner('etc/systemd/system/gpu-sidecar-worker.service'),
    }).toEqual({
      etc: '0:0 755',
      experiments: '0:0 755',
      key: '0:0 600',
      env: '0:0 600',
      state: `${uid}:${gid} 750`,
      unit: '0:0 644',
    });
    expect(statSync(at('etc/gpu-sidecar/tunnel.key')).size).toBe(32);
    expect(readFileSync(at('etc/systemd/system/gpu-sidecar-worker.service'), 'utf8')).toBe(
      readFileSync(path.join(ROOT, 'systemd', 'gpu-sidecar-worker.service'), 'utf8'),
    );
    expect(readlinkSync(at('usr/local/bin/gpu-sidecar'))).toBe(
      path.join(ROOT, 'bin', 'gpu-sidecar'),
    );
    const env = readFileSync(at('etc/gpu-sidecar/worker.env'), 'utf8');
    expect(env).toMatch(/^TUNNEL_LISTEN=0\.0\.0\.0:8080$/m);
    expect(env).toMatch(/^GPU_DEVICES=0,1$/m);
    expect(env).toMatch(/^JOB_UID=1000:1000$/m);
    expect(env).not.toMatch(/^(TUNNEL_KEY_FILE|DATA_FOLDER|EXPERIMENTS_DIR)=/m);
    expect(r.out).toMatch(/^warning gpu-sidecar-worker\.service not started \(--root: /m);
    expect(r.out).toContain(
      `  ssh gpu1.lab sudo cat /etc/gpu-sidecar/tunnel.key | sudo ${ROOT}/bin/gpu-sidecar install relay --connect ws://gpu1.lab:8080 --key -\n`,
    );
    // Nothing on this machine itself.
    expect(sha('/etc/passwd')).toBe(machinePasswd);
  });

  it('run again: everything kept, the key unchanged; an option changes only its variable', () => {
    expect(install(['worker']).code).toBe(0);
    const key = sha(at('etc/gpu-sidecar/tunnel.key'));
    const before = readFileSync(at('etc/gpu-sidecar/worker.env'), 'utf8');
    const r = install(['worker', '--listen', '0.0.0.0:9443']);
    expect(r.code).toBe(0);
    for (const what of ['user gpu-sidecar', '/etc/gpu-sidecar/tunnel.key', '/etc/gpu-sidecar '])
      expect(r.out).toContain(`kept    ${what}`);
    expect(r.out).toContain('updated /etc/gpu-sidecar/worker.env');
    expect(r.out).toContain('--connect ws://');
    expect(r.out).toContain(':9443 --key -');
    expect(sha(at('etc/gpu-sidecar/tunnel.key'))).toBe(key);
    expect(readFileSync(at('etc/gpu-sidecar/worker.env'), 'utf8')).toBe(
      before.replace(/^TUNNEL_LISTEN=.*$/m, 'TUNNEL_LISTEN=0.0.0.0:9443'),
    );
  });

  it("warns when worker.env sets what the unit sets (it would override the unit's)", () => {
    mkdirSync(at('etc/gpu-sidecar'), { recursive: true });
    writeFileSync(at('etc/gpu-sidecar/worker.env'), 'TUNNEL_KEY_FILE=/elsewhere.key\n');
    const r = install(['worker']);
    expect(r.code).toBe(0);
    expect(r.out).toContain(
      "warning /etc/gpu-sidecar/worker.env (sets TUNNEL_KEY_FILE, which overrides the unit's: remove that line)",
    );
  });

  it('a bad option value is refused, naming the option, before anything is written', () => {
    const r = install(['worker', '--gpus', 'eight']);
    expect(r.code).toBe(2);
    expect(r.err).toContain(
      'gpu-sidecar install: --gpus: expected all, none, or GPU indexes/UUIDs',
    );
    expect(existsSync(at('etc/gpu-sidecar'))).toBe(false);
    expect(existsSync(at('usr'))).toBe(false);
  });

  it('must run as root', () => {
    const r = install(['worker'], undefined, 65534);
    expect([r.code, r.err]).toEqual([2, expect.stringContaining('run it as root (sudo)')]);
    expect(existsSync(at('etc/gpu-sidecar'))).toBe(false);
  });
});

describe('install relay --root', () => {
  const key = randomBytes(32);

  it('takes the key from stdin (--key -), root:root 0600, and writes relay.env with --connect', () => {
    const r = install(['relay', '--connect', 'ws://gpu-host:8080', '--key', '-'], key);
    expect([r.code, r.err]).toEqual([0, '']);
    expect(readFileSync(at('etc/gpu-sidecar/tunnel.key'))).toEqual(key);
    expect(owner('etc/gpu-sidecar/tunnel.key')).toBe('0:0 600');
    expect(owner('etc/gpu-sidecar/relay.env')).toBe('0:0 600');
    expect(readFileSync(at('etc/gpu-sidecar/relay.env'), 'utf8')).toMatch(
      /^TUNNEL_CONNECT=ws:\/\/gpu-host:8080\nRELAY_LISTEN=127\.0\.0\.1:8001\nADMIN_LISTEN=127\.0\.0\.1:9464\n$/m,
    );
    expect(account()).toBeUndefined(); // the relay runs as a DynamicUser=: no user made
    // The same key again is fine; no key and no --connect is fine once installed.
    expect(install(['relay', '--key', '-'], key).out).toContain(
      'kept    /etc/gpu-sidecar/tunnel.key',
    );
    expect(install(['relay']).code).toBe(0);
  });

  it('first install without --connect or without a key says which is missing', () => {
    expect(install(['relay', '--key', '-'], key).err).toContain(
      '--connect ws://GPU-HOST:8080 is needed',
    );
    expect(existsSync(at('etc/gpu-sidecar'))).toBe(false);
    expect(install(['relay', '--connect', 'ws://gpu-host:8080']).err).toContain(
      "no key: pipe the worker's key in with --key -",
    );
  });
});

describe('install refuses what would give the key away or take over a file', () => {
  it('a key shorter than 32 bytes (an ssh that printed an error, an empty pipe) is refused', () => {
    for (const input of ['', 'sudo: a password is required\n', randomBytes(12)]) {
      const r = install(['relay', '--connect', 'ws://gpu-host:8080', '--key', '-'], input);
      expect([r.code, r.err]).toEqual([
        2,
        expect.stringMatching(/the key given \(standard input\) holds \d+ bytes/),
      ]);
      expect(existsSync(at('etc/gpu-sidecar/tunnel.key'))).toBe(false);
    }
  });

  it('text of key length (a banner or an error ssh printed) is refused as not a key', () => {
    const r = install(
      ['relay', '--connect', 'ws://gpu-host:8080', '--key', '-'],
      'sudo: a terminal is required to read the password; either use the -S option\n',
    );
    expect([r.code, r.err]).toEqual([2, expect.stringContaining('is text, not a key')]);
    expect(existsSync(at('etc/gpu-sidecar/tunnel.key'))).toBe(false);
  });

  it('a different key never replaces the installed one', () => {
    const first = randomBytes(32);
    expect(install(['relay', '--connect', 'ws://gpu-host:8080', '--key', '-'], first).code).toBe(0);
    const r = install(['relay', '--key', '-'], randomBytes(32));
    expect([r.code, r.err]).toEqual([2, expect.stringContaining('holds another key (fingerprint')]);
    expect(readFileSync(at('etc/gpu-sidecar/tunnel.key'))).toEqual(first);
  });

  it('an installed key that others may read is refused, not used, not loosened further', () => {
    mkdirSync(at('etc/gpu-sidecar'), { recursive: true });
    writeFileSync(at('etc/gpu-sidecar/tunnel.key'), randomBytes(32), { mode: 0o644 });
    chmodSync(at('etc/gpu-sidecar/tunnel.key'), 0o644);
    const r = install(['worker']);
    expect([r.code, r.err]).toEqual([
      2,
      expect.stringContaining('is readable by group or others (mode 644)'),
    ]);
    expect(owner('etc/gpu-sidecar/tunnel.key')).toBe('0:0 644');
  });

  it.each([
    ['the key', 'etc/gpu-sidecar/tunnel.key'],
    ['the env file', 'etc/gpu-sidecar/worker.env'],
    ['the unit', 'etc/systemd/system/gpu-sidecar-worker.service'],
    ['the state folder', 'var/lib/gpu-sidecar'],
  ])(
    'a symbolic link planted where %s goes: refused, nothing written or chowned through it',
    (_, p) => {
      // A file someone else owns, and a name that does not exist yet: the two things a link
      // could make install hand over (chown, chmod) or write a key into.
      const victim = path.join(root, 'victim');
      writeFileSync(victim, 'not yours\n', { mode: 0o644 });
      const target = path.join(root, 'stolen');
      for (const to of [victim, target]) {
        rmSync(at(p), { force: true });
        mkdirSync(path.dirname(at(p)), { recursive: true });
        symlinkSync(to, at(p));
        const r = install(['worker']);
        expect([r.code, r.err]).toEqual([
          2,
          expect.stringContaining(`is a symbolic link: refusing to write through it`),
        ]);
        expect(existsSync(target)).toBe(false);
        expect([readFileSync(victim, 'utf8'), owner('victim')]).toEqual(['not yours\n', '0:0 644']);
      }
    },
  );
});
