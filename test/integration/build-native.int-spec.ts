import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

jest.setTimeout(120_000);

const ROOT = path.join(__dirname, '..', '..');
const ADDON = path.join('native', 'frame-cipher', 'build', 'Release', 'frame_cipher.node');

/**
 * scripts/build-native.js, the install step of `npm ci`, run on a copy of what it builds (it
 * builds next to itself: `rebuild` would first remove this checkout's own build).
 */
describe('scripts/build-native.js (npm ci builds the native frame cipher)', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'gsc-build-native-'));
  mkdirSync(path.join(work, 'scripts'));
  cpSync(
    path.join(ROOT, 'scripts', 'build-native.js'),
    path.join(work, 'scripts', 'build-native.js'),
  );
  cpSync(path.join(ROOT, 'native'), path.join(work, 'native'), {
    recursive: true,
    filter: (src) => !src.includes(`${path.sep}build`),
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const run = (env: Record<string, string>) => {
    const r = spawnSync(process.execPath, ['scripts/build-native.js'], {
      cwd: work,
      env: { ...process.env, ...env },
      encoding: 'utf8',
    });
    return { code: r.status, out: `${r.stdout}${r.stderr}` };
  };

  it('builds the addon, which loads with its four functions', () => {
    const r = run({ GPU_SIDECAR_NATIVE: '' });
    expect(r.code).toBe(0);
    expect(r.out).toContain(`built ${ADDON}`);
    const load = spawnSync(
      process.execPath,
      [
        '-e',
        `const g = require(${JSON.stringify(path.join(work, ADDON))}); process.stdout.write(Object.keys(g).sort().join(','))`,
      ],
      { encoding: 'utf8' },
    );
    expect(load.stdout).toBe('create,free,open,seal');
  });

  it('without a working compiler: says why and how to build it later, and the install goes on', () => {
    const r = run({ GPU_SIDECAR_NATIVE: '', CC: '/bin/false', CXX: '/bin/false' });
    expect(r.code).toBe(0);
    expect(r.out).toMatch(
      /build-native: node-gyp rebuild failed .*node:crypto.*npm run build:native/s,
    );
    expect(existsSync(path.join(work, ADDON))).toBe(false);
  });

  it('GPU_SIDECAR_NATIVE=require makes that failure fail the install; =off builds nothing', () => {
    const r = run({ GPU_SIDECAR_NATIVE: 'require', CC: '/bin/false', CXX: '/bin/false' });
    expect(r.code).toBe(1);
    expect(r.out).toContain('(GPU_SIDECAR_NATIVE=require)');
    const off = run({ GPU_SIDECAR_NATIVE: 'off' });
    expect(off.code).toBe(0);
    expect(off.out).toContain('GPU_SIDECAR_NATIVE=off, not built');
    expect(existsSync(path.join(work, ADDON))).toBe(false);
  });
});
