// A real `docker build` of docker/Dockerfile against the test Docker Engine, which reaches no
// registry (docs/DEPLOY.md, "Building with no registry"): the base is made from this machine's
// node (scripts/make-base-image.sh) and the app comes prebuilt from the context
// (scripts/offline-build-context.sh, APP_FROM=prebuilt). What this proves is the runtime stage
// (user, tini, entrypoint, HEALTHCHECK, embedded Redis, a clean stop), not `npm ci` in the build
// or the apt-get of the real node:20-bookworm-slim base, which need the network.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT } from '../support/daemon';
import { testDockerHost } from '../support/docker';
import { BASE_IMAGE, ensureBaseImage } from '../support/image';

jest.setTimeout(300_000);

const BASE = BASE_IMAGE;
const IMAGE = 'gpu-sidecar-build-test:latest';
let env: NodeJS.ProcessEnv;

function docker(args: string[], timeout = 120_000): { code: number | null; out: string } {
  const r = spawnSync('docker', args, { env, encoding: 'utf8', timeout });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

function dockerOk(args: string[], timeout?: number): string {
  const r = docker(args, timeout);
  if (r.code !== 0) throw new Error(`docker ${args.join(' ')} exited ${r.code}:\n${r.out}`);
  return r.out.trim();
}

async function waitForHealth(id: string, want: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let status = '';
  while (Date.now() < deadline) {
    status = dockerOk(['inspect', '-f', '{{.State.Health.Status}}', id]);
    if (status === want) return status;
    await new Promise((r) => setTimeout(r, 500));
  }
  return status;
}

describe('docker/Dockerfile built offline (legacy builder, no registry)', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'gsc-build-'));
  const context = path.join(work, 'context');
  const keys = path.join(work, 'keys');
  const containers: string[] = [];

  beforeAll(() => {
    env = { ...process.env, DOCKER_HOST: testDockerHost() };
    if (!existsSync(path.join(ROOT, 'dist', 'apps', 'cli', 'src', 'main.js')))
      throw new Error('run `npm run build` first (npm test does)');
    // The base is made once per node version and list of parts (its labels), then reused.
    ensureBaseImage(env);
    execFileSync(path.join(ROOT, 'scripts', 'offline-build-context.sh'), [context], { env });
  });

  afterAll(() => {
    for (const c of containers) docker(['rm', '--force', c]);
    docker(['rmi', '--force', IMAGE]);
    // The legacy builder keeps each stage as an untagged image; ours carry the base's label.
    const dangling = docker([
      'images',
      '-q',
      '-f',
      'dangling=true',
      '-f',
      'label=org.gpu-sidecar.node-version',
    ]);
    const ids = dangling.out.split('\n').filter(Boolean);
    if (ids.length) docker(['rmi', ...ids]);
    rmSync(work, { recursive: true, force: true });
  });

  it('builds from the base and the prebuilt context', () => {
    const r = docker(
      [
        'build',
        '-f',
        path.join(ROOT, 'docker', 'Dockerfile'),
        '--build-arg',
        `NODE_IMAGE=${BASE}`,
        '--build-arg',
        'APP_FROM=prebuilt',
        '-t',
        IMAGE,
        context,
      ],
      240_000,
    );
    expect([r.code, r.out.slice(-3000)]).toEqual([0, expect.stringContaining(IMAGE)]);
    // The base had tini, redis-server and the CA certificates: apt-get was skipped, not run.
    expect(r.out).toContain('base image has tini, redis-server and CA certificates');
  });

  it('runs as a non-root user under tini, with the HEALTHCHECK and entrypoint gpu-sidecar', () => {
    const config = JSON.parse(dockerOk(['inspect', '-f', '{{json .Config}}', IMAGE])) as {
      User: string;
      Entrypoint: string[];
      Cmd: string[];
      Healthcheck: { Test: string[]; Retries: number };
    };
    expect(config.User).toBe('node');
    expect(dockerOk(['run', '--rm', '--entrypoint', 'id', IMAGE, '-u'])).toBe('1000');
    expect(config.Entrypoint).toEqual(['/usr/bin/tini', '--', 'gpu-sidecar']);
    expect(config.Cmd).toEqual(['worker']);
    expect(config.Healthcheck.Test.slice(0, 3)).toEqual(['CMD', 'node', '-e']);
    expect(config.Healthcheck.Test[3]).toContain('http://127.0.0.1:8000/health/live');
  });

  it('seals tunnel frames with the native frame cipher the checkout built (prebuilt context)', () => {
    const script =
      "process.stdout.write(require('/app/dist/libs/tunnel/src/protocol/native-gcm.js').frameCipherImplementation)";
    const out = dockerOk(['run', '--rm', '--entrypoint', 'node', IMAGE, '-e', script]);
    expect(out).toMatch(/^native/);
  });

  it('`--help` and `keygen` work in the image', () => {
    const help = docker(['run', '--rm', IMAGE, '--help']);
    expect(help.code).toBe(0);
    for (const cmd of ['keygen', 'relay', 'worker', 'doctor']) expect(help.out).toContain(cmd);
    rmSync(keys, { recursive: true, force: true });
    execFileSync('mkdir', ['-p', keys]);
    chmodSync(keys, 0o777); // the image's user (uid 1000) writes here
    const out = dockerOk([
      'run',
      '--rm',
      '-v',
      `${keys}:/keys`,
      IMAGE,
      'keygen',
      '/keys/tunnel.key',
    ]);
    expect(out).toMatch(/fingerprint [0-9a-f]{16}/);
    const st = statSync(path.join(keys, 'tunnel.key'));
    expect([st.size, st.mode & 0o777, st.uid]).toEqual([32, 0o600, 1000]);
  });

  it('the worker (embedded Redis) turns healthy by the image HEALTHCHECK, tini is PID 1, SIGTERM stops it cleanly', async () => {
    const id = dockerOk([
      'run',
      '-d',
      '--health-interval',
      '1s',
      '--health-start-period',
      '60s',
      '-v',
      `${keys}:/keys:ro`,
      '-e',
      'TUNNEL_KEY_FILE=/keys/tunnel.key',
      '-e',
      'GPU_DEVICES=none',
      IMAGE,
    ]);
    containers.push(id);
    expect(await waitForHealth(id, 'healthy')).toBe('healthy');
    expect(dockerOk(['exec', id, 'cat', '/proc/1/cmdline']).split('\0')).toEqual([
      '/usr/bin/tini',
      '--',
      'gpu-sidecar',
      'worker',
      '',
    ]);
    dockerOk(['stop', '-t', '60', id]);
    expect(dockerOk(['inspect', '-f', '{{.State.ExitCode}}', id])).toBe('0');
    expect(dockerOk(['logs', id])).toContain('worker stopped');
  });

  it('the HEALTHCHECK fails when nothing answers on the API port', async () => {
    const id = dockerOk([
      'run',
      '-d',
      '--health-interval',
      '1s',
      '--health-retries',
      '1',
      '--health-start-period',
      '1ms', // failures inside the image's 30 s start period would not count
      '--entrypoint',
      'sleep',
      IMAGE,
      '120',
    ]);
    containers.push(id);
    expect(await waitForHealth(id, 'unhealthy')).toBe('unhealthy');
  });
});
