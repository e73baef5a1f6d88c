import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { exitCode, ROOT, runCli } from '../support/daemon';
import { TEST_IMAGE, testDockerHost } from '../support/docker';
import { freePort } from '../support/ports';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, startPair, type Pair } from '../support/system';

jest.setTimeout(120_000);

async function doctor(role: string, env: Record<string, string>) {
  const p = runCli(['doctor', role, '--env-file', '/dev/null'], env);
  const code = await exitCode(p, 60_000);
  return { code, out: p.stdout() };
}

describe('gpu-sidecar doctor', () => {
  let pair: Pair;
  let redis: TestRedis;
  let workerEnv: Record<string, string>;
  beforeAll(async () => {
    pair = await startPair();
    redis = await startRedis();
    workerEnv = {
      TUNNEL_KEY_FILE: pair.keyFile,
      DATA_FOLDER: path.join(pair.dir, 'doctor-data'),
      EXPERIMENTS_DIR: path.join(__dirname, '..', '..', 'examples', 'experiments'),
      GPU_DEVICES: 'none',
      REDIS_URL: redis.url,
      DOCKER_HOST: testDockerHost(),
    };
  });
  afterAll(async () => {
    await pair?.stop();
    redis?.stop();
  });

  it('passes every check of a good worker setup and exits 0', async () => {
    const { code, out } = await doctor('worker', workerEnv);
    expect(out).toContain('all checks passed');
    for (const name of ['key file', 'docker', 'redis', 'data folder', 'experiments'])
      expect(out).toMatch(new RegExp(`^ok +${name}:`, 'm'));
    expect(code).toBe(0);
  });

  it('names each broken part of a worker setup with its fix and exits 1', async () => {
    const badKey = keygen(pair.dir, 'loose.key');
    chmodSync(badKey, 0o644);
    const notADir = path.join(pair.dir, 'a-file');
    writeFileSync(notADir, '');
    const evicting = await startRedis();
    try {
      execFileSync('redis-cli', [
        '-p',
        String(evicting.port),
        'config',
        'set',
        'maxmemory-policy',
        'allkeys-lru',
      ]);
      const { code, out } = await doctor('worker', {
        ...workerEnv,
        TUNNEL_KEY_FILE: badKey,
        DATA_FOLDER: path.join(notADir, 'data'),
        REDIS_URL: evicting.url,
        DOCKER_HOST: `unix://${pair.dir}/no-docker.sock`,
        EXPERIMENTS_DIR: path.join(pair.dir, 'no-experiments'),
      });
      expect(code).toBe(1);
      expect(out).toMatch(/^FAIL key file: .*— fix: chmod 600 /m);
      // No experiment could be read, so none needs Docker: a warning (issue #16.7).
      expect(out).toMatch(
        /^warn docker: .*no installed experiment runs in Docker.*— fix: start Docker/m,
      );
      expect(out).toMatch(
        /^FAIL redis: .*allkeys-lru.*— fix: redis-cli CONFIG SET maxmemory-policy noeviction/m,
      );
      expect(out).toMatch(/^FAIL data folder: .*— fix: mkdir -p /m);
      expect(out).toMatch(/^FAIL experiments: /m);
    } finally {
      evicting.stop();
    }
  });

  it('says the chmod fix once, not twice (issue #16.13)', async () => {
    const loose = keygen(pair.dir, 'loose-once.key');
    chmodSync(loose, 0o644);
    const { out } = await doctor('worker', { ...workerEnv, TUNNEL_KEY_FILE: loose });
    const line = out.split('\n').find((l) => l.startsWith('FAIL key file:')) ?? out;
    expect(line).toBe(
      `FAIL key file: key file ${loose} is readable by group or others (mode 644) — fix: chmod 600 ${loose}`,
    );
  });

  it('creates nothing: a DATA_FOLDER that does not exist yet is fine when it can be made (issue #16.13)', async () => {
    const data = path.join(pair.dir, 'not-yet', 'data');
    const { code, out } = await doctor('worker', { ...workerEnv, DATA_FOLDER: data });
    expect(out).toContain(
      `ok   data folder: ${data}: does not exist yet; the worker creates it at start`,
    );
    expect(existsSync(path.join(pair.dir, 'not-yet'))).toBe(false);
    expect(code).toBe(0);
  });

  it('an empty experiments folder is a warning, not ok (issue #16.13)', async () => {
    const empty = path.join(pair.dir, 'empty-experiments');
    mkdirSync(empty, { recursive: true });
    const { code, out } = await doctor('worker', { ...workerEnv, EXPERIMENTS_DIR: empty });
    expect(out).toMatch(
      new RegExp(
        `^warn experiments: ${empty}: no experiment installed, so no job can be submitted — fix: put one YAML file`,
        'm',
      ),
    );
    expect(out).toMatch(/^all checks passed \(1 warning\)$/m);
    expect(code).toBe(0);
  });

  it('no Docker: a warning when no experiment needs it (exit 0), a failure naming the ones that do (issue #16.7)', async () => {
    const noDocker = { ...workerEnv, DOCKER_HOST: `unix://${pair.dir}/no-docker.sock` };
    const processOnly = path.join(pair.dir, 'process-only');
    mkdirSync(processOnly, { recursive: true });
    copyFileSync(
      path.join(ROOT, 'examples', 'experiments', 'hello.yaml'),
      path.join(processOnly, 'hello.yaml'),
    );
    const fine = await doctor('worker', { ...noDocker, EXPERIMENTS_DIR: processOnly });
    expect(fine.out).toMatch(
      /^warn docker: unix:\/\/.*no-docker\.sock: .*; no installed experiment runs in Docker, so nothing needs it now — fix: /m,
    );
    expect([fine.code, fine.out]).toEqual([
      0,
      expect.stringContaining('all checks passed (1 warning)'),
    ]);
    // The examples include hello-docker: then Docker is needed, and doctor says by which.
    const needed = await doctor('worker', noDocker);
    expect(needed.out).toMatch(
      /^FAIL docker: unix:\/\/.*no-docker\.sock: .*\(needed by hello-docker\) — fix: start Docker/m,
    );
    expect(needed.code).toBe(1);
  });

  it('says which configuration it read', async () => {
    const { out } = await doctor('worker', workerEnv);
    expect(out.split('\n').slice(0, 2)).toEqual([
      'gpu-sidecar doctor (worker)',
      'configuration: --env-file /dev/null, under the environment',
    ]);
  });

  it('confirms the relay reaches the worker with the same key', async () => {
    const { code, out } = await doctor('relay', pair.relayEnv);
    expect(out).toMatch(
      /^ok +tunnel: ws:\/\/127\.0\.0\.1:\d+\/: authenticated with key [0-9a-f]{16}/m,
    );
    expect(out).toMatch(/^ok +relay: running; 1 of 1 tunnels up/m);
    expect(code).toBe(0);
  });

  it('tells a closed tunnel port (firewall hint) from a key mismatch (fingerprints)', async () => {
    const closed = await freePort();
    const other = keygen(pair.dir, 'other-doctor.key');
    const refused = await doctor('relay', {
      ...pair.relayEnv,
      TUNNEL_CONNECT: `ws://127.0.0.1:${closed}`,
    });
    expect(refused.code).toBe(1);
    expect(refused.out).toMatch(
      /^FAIL tunnel port: .*ECONNREFUSED — fix: open TCP \d+ on the peer's host firewall.*security list/m,
    );
    const mismatch = await doctor('relay', { ...pair.relayEnv, TUNNEL_KEY_FILE: other });
    expect(mismatch.code).toBe(1);
    expect(mismatch.out).toMatch(
      /^FAIL tunnel: .*handshake failed.*— fix: the peer refused our key: compare the fingerprints/m,
    );
  });
});

/**
 * A private dockerd that believes the NVIDIA Container Toolkit is installed: the `nvidia`
 * runtime is registered (an alias of runc) and test/fixtures/nvidia-toolkit is first on its
 * PATH, so dockerd accepts GPU DeviceRequests and runs the fake prestart hook, which puts an
 * `nvidia-smi` listing two pretend H100s into the container. Docker, the DeviceRequest and the
 * container are real; the driver and GPUs are not.
 */
async function startFakeToolkitDocker(dir: string): Promise<{ host: string; stop(): void }> {
  if (spawnSync('id', ['-u'], { encoding: 'utf8' }).stdout.trim() !== '0')
    throw new Error('this test starts a private dockerd: run it as root (CI does)');
  mkdirSync(dir, { recursive: true });
  const host = `unix://${dir}/docker.sock`;
  const fixture = path.join(ROOT, 'test', 'fixtures', 'nvidia-toolkit');
  const child = spawn(
    'dockerd',
    [
      '--host',
      host,
      '--data-root',
      `${dir}/data`,
      '--exec-root',
      `${dir}/exec`,
      '--pidfile',
      `${dir}/dockerd.pid`,
      '--iptables=false',
      '--ip6tables=false',
      '--bridge=none',
      '--add-runtime',
      'nvidia=runc',
    ],
    {
      env: {
        ...process.env,
        PATH: `${fixture}:${path.dirname(process.execPath)}:${process.env.PATH}`,
      },
      stdio: 'ignore',
      detached: true,
    },
  );
  const env = { ...process.env, DOCKER_HOST: host };
  for (let i = 0; spawnSync('docker', ['version'], { env }).status !== 0; i++) {
    if (i > 150) throw new Error(`the fake-toolkit dockerd did not answer (log: ${dir})`);
    await new Promise((r) => setTimeout(r, 200));
  }
  execFileSync(path.join(ROOT, 'scripts', 'make-test-image.sh'), [TEST_IMAGE], { env });
  return {
    host,
    stop: () => {
      child.kill('SIGTERM');
      for (let i = 0; i < 100 && existsSync(`${dir}/dockerd.pid`); i++) spawnSync('sleep', ['0.1']);
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        /* a mount dockerd left behind: the folder is under the pair's temporary dir anyway */
      }
    },
  };
}

describe('gpu-sidecar doctor: GPUs visible inside a container', () => {
  let pair: Pair;
  let redis: TestRedis;
  let fake: { host: string; stop(): void } | undefined;
  let env: Record<string, string>;
  const gpuExperiment = (dir: string, image: string) => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      path.join(dir, 'train.yaml'),
      `name: train\nrunner: docker\nimage: ${image}\ncommand: [sh, -c, 'true']\ngpus: 1\nparams: { type: object }\n`,
    );
    return dir;
  };
  const line = (out: string) =>
    out.split('\n').find((l) => l.includes('GPUs in a container')) ?? out;

  beforeAll(async () => {
    pair = await startPair();
    redis = await startRedis();
    env = {
      TUNNEL_KEY_FILE: pair.keyFile,
      DATA_FOLDER: path.join(pair.dir, 'gpu-doctor-data'),
      EXPERIMENTS_DIR: gpuExperiment(path.join(pair.dir, 'gpu-experiments'), TEST_IMAGE),
      GPU_DEVICES: 'all',
      REDIS_URL: redis.url,
      DOCKER_HOST: testDockerHost(),
    };
  });
  afterAll(async () => {
    fake?.stop();
    await pair?.stop();
    redis?.stop();
  });

  it('without the NVIDIA toolkit: says so and what to install, and exits 1', async () => {
    const { code, out } = await doctor('worker', env);
    expect(code).toBe(1);
    expect(out).toMatch(/^FAIL nvidia runtime: .*— fix: apt-get install nvidia-container-toolkit/m);
    expect(line(out)).toMatch(
      /^FAIL GPUs in a container: not checked: Docker has no NVIDIA runtime.*— fix: apt-get install nvidia-container-toolkit && nvidia-ctk runtime configure --runtime=docker && systemctl restart docker$/,
    );
  });

  it('with the toolkit (faked at the hook): lists the GPUs nvidia-smi -L sees inside, exits 0', async () => {
    fake = await startFakeToolkitDocker(path.join(pair.dir, 'fake-toolkit-docker'));
    const all = await doctor('worker', { ...env, DOCKER_HOST: fake.host });
    expect(line(all.out)).toMatch(
      /^ok +GPUs in a container: gpu-sidecar-test:latest: 0 NVIDIA H100 80GB HBM3 \(GPU-3e1c[^)]+\), 1 NVIDIA H100 80GB HBM3 \(GPU-8f0e[^)]+\)$/,
    );
    expect(all.out).toMatch(/^ok +nvidia runtime: registered with Docker/m);
    expect([all.code, all.out]).toEqual([0, expect.stringContaining('all checks passed')]);
    const one = await doctor('worker', {
      ...env,
      DOCKER_HOST: fake.host,
      GPU_DEVICES: 'GPU-8f0e2d41-1a6c-4b7e-b3d2-5e6f7a8b9c0d',
    });
    expect(line(one.out)).toMatch(
      /^ok +GPUs in a container: .*: 0 NVIDIA H100 80GB HBM3 \(GPU-8f0e[^)]+\)$/,
    );
    expect(one.code).toBe(0);
    // The check's own container is removed.
    const left = execFileSync('docker', ['ps', '-aq', '--filter', 'label=org.gpu-sidecar.doctor'], {
      env: { ...process.env, DOCKER_HOST: fake.host },
      encoding: 'utf8',
    });
    expect(left.trim()).toBe('');
  });

  it('a GPU_DEVICES that names a GPU the host lacks: the toolkit refuses it, doctor says which fix', async () => {
    const { code, out } = await doctor('worker', {
      ...env,
      DOCKER_HOST: fake!.host,
      GPU_DEVICES: '1,7',
    });
    expect(code).toBe(1);
    expect(line(out)).toMatch(
      /^FAIL GPUs in a container: .*7: unknown device.*— fix: GPU_DEVICES names a GPU that does not exist/,
    );
  });

  it('an experiment image missing from the host: says to pull it', async () => {
    const exps = gpuExperiment(path.join(pair.dir, 'gpu-experiments-missing'), 'lab/absent:1');
    const { code, out } = await doctor('worker', {
      ...env,
      DOCKER_HOST: fake!.host,
      EXPERIMENTS_DIR: exps,
    });
    expect(code).toBe(1);
    expect(line(out)).toMatch(
      /^FAIL GPUs in a container: no experiment image is on this host \(lab\/absent:1\) — fix: docker pull lab\/absent:1/,
    );
  });
});
