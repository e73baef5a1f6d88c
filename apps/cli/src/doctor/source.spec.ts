import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { packageRoot } from '../version';
import { findSources } from './source';
import { readServiceUnit, unitEnvironment } from './systemd-unit';

const UNITS = path.join(packageRoot(), 'systemd');

describe('readServiceUnit: the shipped units as systemd reads them', () => {
  it('worker: Environment=, EnvironmentFile=, LoadCredential=, user, groups and writable paths', () => {
    const u = readServiceUnit('gpu-sidecar-worker.service', UNITS)!;
    expect(Object.fromEntries(u.environment)).toMatchObject({
      DATA_FOLDER: '/var/lib/gpu-sidecar/data',
      EXPERIMENTS_DIR: '/etc/gpu-sidecar/experiments',
      TUNNEL_KEY_FILE: '%d/tunnel.key',
    });
    expect(u.environmentFiles).toEqual([{ path: '/etc/gpu-sidecar/worker.env', optional: false }]);
    expect([...u.credentials]).toEqual([['tunnel.key', '/etc/gpu-sidecar/tunnel.key']]);
    expect([u.user, u.dynamicUser, u.supplementaryGroups]).toEqual([
      'gpu-sidecar',
      false,
      ['docker'],
    ]);
    expect([u.protectSystemStrict, u.readWritePaths, u.stateDirectories]).toEqual([
      true,
      ['/var/lib/gpu-sidecar'],
      ['/var/lib/gpu-sidecar'],
    ]);
  });

  it('relay: a dynamic user, the key as a credential', () => {
    const u = readServiceUnit('gpu-sidecar-relay.service', UNITS)!;
    expect([u.dynamicUser, u.user, [...u.credentials]]).toEqual([
      true,
      undefined,
      [['tunnel.key', '/etc/gpu-sidecar/tunnel.key']],
    ]);
  });

  it('is undefined for a unit that is not installed', () => {
    expect(readServiceUnit('gpu-sidecar-worker.service', tmpdir())).toBeUndefined();
  });
});

describe('a unit with drop-ins, quotes and resets', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), 'gsc-unit-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('applies drop-ins in order over the unit; env files win over Environment=', () => {
    writeFileSync(
      path.join(dir, 'x.service'),
      [
        '[Unit]',
        'Environment=IGNORED=unit-section',
        '[Service]',
        'Environment="A=one two" B=b',
        'Environment=C=%n D=%%d',
        `EnvironmentFile=-${dir}/missing.env`,
        `EnvironmentFile=${dir}/x.env`,
        'ReadWritePaths=/var/lib/x',
        'SupplementaryGroups=docker video',
      ].join('\n'),
    );
    writeFileSync(path.join(dir, 'x.env'), 'B=from-file\nE="quoted value"\n');
    mkdirSync(path.join(dir, 'x.service.d'));
    writeFileSync(
      path.join(dir, 'x.service.d', '20-data.conf'),
      '[Service]\nEnvironment=DATA_FOLDER=/srv/data\nReadWritePaths=-/srv/data\nSupplementaryGroups=\n',
    );
    writeFileSync(path.join(dir, 'x.service.d', '10-first.conf'), '[Service]\nUser=lab\n');
    const u = readServiceUnit('x.service', dir)!;
    expect(u.files.map((f) => path.basename(f))).toEqual([
      'x.service',
      '10-first.conf',
      '20-data.conf',
    ]);
    expect(u.user).toBe('lab');
    expect(u.readWritePaths).toEqual(['/var/lib/x', '/srv/data']);
    expect(u.supplementaryGroups).toEqual([]); // an empty assignment resets the list
    expect(unitEnvironment(u)).toEqual({
      A: 'one two',
      B: 'from-file',
      C: 'x.service',
      D: '%d',
      DATA_FOLDER: '/srv/data',
      E: 'quoted value',
    });
  });

  it('a required env file that cannot be read is an error naming it', () => {
    writeFileSync(path.join(dir, 'y.service'), `[Service]\nEnvironmentFile=${dir}/nope.env\n`);
    expect(() => unitEnvironment(readServiceUnit('y.service', dir)!)).toThrow(
      `EnvironmentFile=${dir}/nope.env of y.service: ENOENT`,
    );
  });
});

describe('findSources: the configuration the daemon runs with (issue #16.3)', () => {
  let dir: string;
  let unitDir: string;
  let etc: string;
  const elsewhere = () => path.join(dir, 'elsewhere');
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-sources-'));
    unitDir = path.join(dir, 'units');
    etc = path.join(dir, 'etc');
    mkdirSync(unitDir);
    mkdirSync(etc);
    mkdirSync(elsewhere());
    // The shipped worker unit, its /etc/gpu-sidecar paths moved under the temporary folder.
    const unit = readFileSync(path.join(UNITS, 'gpu-sidecar-worker.service'), 'utf8').replaceAll(
      '/etc/gpu-sidecar/',
      `${etc}/`,
    );
    writeFileSync(path.join(unitDir, 'gpu-sidecar-worker.service'), unit);
    // As DEPLOY tells: no TUNNEL_KEY_FILE, DATA_FOLDER or EXPERIMENTS_DIR in worker.env.
    writeFileSync(path.join(etc, 'worker.env'), 'GPU_DEVICES=0,1\nJOB_UID=1000:1000\n');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const ctx = (cwd = elsewhere()) => ({
    cwd,
    processEnv: { PATH: '/usr/bin', GPU_DEVICES: 'from-the-shell' },
    packageRoot: path.join(dir, 'package'),
    unitDir,
  });

  it('no --env-file, no .env: the installed unit, with the key its LoadCredential= copies', () => {
    const [s, ...more] = findSources(undefined, undefined, ctx());
    expect(more).toEqual([]);
    expect(s.role).toBe('worker');
    expect(s.env).toMatchObject({
      TUNNEL_KEY_FILE: `${etc}/tunnel.key`,
      DATA_FOLDER: '/var/lib/gpu-sidecar/data',
      EXPERIMENTS_DIR: `${etc}/experiments`,
      GPU_DEVICES: '0,1', // the env file's, not the shell's: the daemon never sees the shell
      JOB_UID: '1000:1000',
    });
    expect(s.describe).toBe(
      `systemd unit ${unitDir}/gpu-sidecar-worker.service (Environment=, EnvironmentFile=${etc}/worker.env, LoadCredential=tunnel.key:${etc}/tunnel.key)`,
    );
    expect(s.service?.unit.user).toBe('gpu-sidecar');
  });

  it("--env-file naming the unit's EnvironmentFile= reads the unit's view, not the file alone", () => {
    const [s] = findSources('worker', path.join(etc, 'worker.env'), ctx());
    expect(s.env.TUNNEL_KEY_FILE).toBe(`${etc}/tunnel.key`);
    expect(s.describe).toMatch(/^systemd unit /);
  });

  it('any other --env-file: that file under the environment, as the daemon would read it', () => {
    const file = path.join(dir, 'other.env');
    writeFileSync(file, 'TUNNEL_KEY_FILE=/k\nGPU_DEVICES=none\n');
    const [s] = findSources(undefined, file, ctx());
    expect(s.env).toMatchObject({ TUNNEL_KEY_FILE: '/k', GPU_DEVICES: 'from-the-shell' });
    expect(s.describe).toBe(`--env-file ${file}, under the environment`);
  });

  it('.env in the working folder comes before the unit', () => {
    writeFileSync(path.join(elsewhere(), '.env'), 'RELAY_LISTEN=127.0.0.1:8001\n');
    const [s] = findSources(undefined, undefined, ctx());
    expect([s.role, s.describe]).toEqual([
      'relay',
      `${path.join(elsewhere(), '.env')}, under the environment`,
    ]);
  });

  it("npm start's files, when run in the package folder: every daemon it started", () => {
    const pkg = path.join(dir, 'package');
    mkdirSync(path.join(pkg, '.local'), { recursive: true });
    writeFileSync(
      path.join(pkg, '.local', 'worker.env'),
      'TUNNEL_KEY_FILE=/dev-key\nGPU_DEVICES=none\n',
    );
    writeFileSync(path.join(pkg, '.local', 'relay.env'), 'TUNNEL_KEY_FILE=/dev-key\n');
    const sources = findSources(undefined, undefined, ctx(pkg));
    expect(sources.map((s) => [s.role, s.describe])).toEqual([
      ['worker', `npm start's ${pkg}/.local/worker.env`],
      ['relay', `npm start's ${pkg}/.local/relay.env`],
    ]);
    // npm start gives its daemons the file's values over the shell's.
    expect(sources[0].env.GPU_DEVICES).toBe('none');
    expect(findSources('relay', undefined, ctx(pkg)).map((s) => s.role)).toEqual(['relay']);
  });

  it('nothing installed: the environment alone, and it says so', () => {
    rmSync(path.join(unitDir, 'gpu-sidecar-worker.service'));
    const [s] = findSources(undefined, undefined, ctx());
    expect(s.describe).toBe(
      `the environment alone (no --env-file, no .env here, no npm start configuration, no installed unit in ${unitDir})`,
    );
  });

  it('an env file that cannot be read: the unit view carries the error', () => {
    rmSync(path.join(etc, 'worker.env'));
    const [s] = findSources('worker', undefined, ctx());
    expect(s.error).toMatch(/EnvironmentFile=.*worker\.env of gpu-sidecar-worker\.service: ENOENT/);
  });
});
