// docker.sh driven with recording fakes of `docker`, `git` and `curl` on PATH
// (test/fixtures/deploy/bin): each call is one line of tab-separated argv in a log, and the fakes
// keep just enough state (containers, image, network) for rebuild, up, down and status to take
// their real branches. No Docker Engine is touched.
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.join(__dirname, '..', '..');
const script = path.join(root, 'docker.sh');
const fakeBin = path.join(root, 'test', 'fixtures', 'deploy', 'bin');

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Each recorded call as its argv, the program name first. */
  calls: string[][];
}

let dir: string;
let log: string;
let state: string;
let key: string;
let data: string;
let socket: string;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'gsc-deploy-'));
  log = path.join(dir, 'calls.log');
  state = path.join(dir, 'state');
  data = path.join(dir, 'data');
  key = path.join(dir, 'tunnel.key');
  socket = path.join(dir, 'docker.sock');
  mkdirSync(state);
  writeFileSync(log, '');
  writeFileSync(key, Buffer.alloc(32, 7), { mode: 0o600 });
  chmodSync(key, 0o600);
  writeFileSync(socket, ''); // stands in for the Engine's socket: docker.sh only stats it
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Writes an env file with these variables and runs `docker.sh --env-file it ...args`. */
function run(
  args: string[],
  vars: Record<string, string> = {},
  extraEnv: Record<string, string> = {},
): Result {
  const envFile = path.join(dir, 'test.env');
  writeFileSync(
    envFile,
    ['# written by the test', ...Object.entries(vars).map(([k, v]) => `${k}=${v}`), ''].join('\n'),
  );
  writeFileSync(log, '');
  const r = spawnSync('bash', [script, '--env-file', envFile, ...args], {
    cwd: dir,
    encoding: 'utf8',
    timeout: 20_000,
    // A clean environment: nothing from the developer's shell (TUNNEL_KEY_FILE, DOCKER_HOST...).
    env: {
      PATH: `${fakeBin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      HOME: dir,
      FAKE_LOG: log,
      FAKE_STATE: state,
      ...extraEnv,
    },
  });
  const calls = readFileSync(log, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\t'));
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, calls };
}

/** The variables a GPU host needs, with a fake socket. */
function workerVars(extra: Record<string, string> = {}): Record<string, string> {
  return {
    TUNNEL_KEY_FILE: key,
    DATA_FOLDER: data,
    DOCKER_HOST: `unix://${socket}`,
    GPU_DEVICES: '0,1',
    JOB_UID: '1000:1000',
    ...extra,
  };
}

const docker = (r: Result, sub: string) => r.calls.filter((c) => c[0] === 'docker' && c[1] === sub);
const named = (r: Result, name: string) =>
  docker(r, 'run').find((c) => c.includes('--name') && c[c.indexOf('--name') + 1] === name);
/** The value following `flag` in argv, for every occurrence. */
const values = (argv: string[], flag: string) =>
  argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
const indexOf = (r: Result, pred: (c: string[]) => boolean) => r.calls.findIndex(pred);

describe('docker.sh: help and configuration errors', () => {
  it('--help prints the usage with every command and exits 0', () => {
    const r = run(['--help']);
    expect(r.code).toBe(0);
    for (const cmd of ['rebuild', 'pull', 'up', 'down', 'logs', 'status', 'keygen', '--env-file']) {
      expect(r.stdout).toContain(cmd);
    }
    expect(r.calls).toEqual([]);
  });

  it('no command: usage on stderr, exit 2', () => {
    const r = run([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage:');
  });

  it('an unknown command or target is refused', () => {
    expect(run(['explode']).stderr).toContain('docker.sh: unknown command: explode');
    expect(run(['rebuild', 'toaster']).code).toBe(2);
  });

  it('rebuild names each missing variable, exits non-zero and runs nothing', () => {
    const r = run(['rebuild']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('docker.sh: TUNNEL_KEY_FILE is not set (see .env.template)');
    expect(r.stderr).toContain('docker.sh: DATA_FOLDER is not set (see .env.template)');
    expect(r.calls).toEqual([]);
  });

  it('rebuild relay names TUNNEL_CONNECT when it is missing', () => {
    const r = run(['rebuild', 'relay'], { TUNNEL_KEY_FILE: key });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('docker.sh: TUNNEL_CONNECT is not set (see .env.template)');
    expect(r.stderr).not.toContain('TUNNEL_KEY_FILE is not set');
    expect(r.calls).toEqual([]);
  });

  it('a missing --env-file is an error that names it', () => {
    const r = spawnSync('bash', [script, '--env-file', path.join(dir, 'nope.env'), 'status'], {
      encoding: 'utf8',
      env: { PATH: `${fakeBin}:${process.env.PATH}`, FAKE_LOG: log, FAKE_STATE: state },
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('nope.env: no such file');
  });

  it('a key file that group or others can read is refused with the chmod to run', () => {
    chmodSync(key, 0o644);
    const r = run(['rebuild'], workerVars());
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`chmod 600 ${key}`);
    expect(docker(r, 'run')).toEqual([]);
  });

  it('a key file that does not exist is refused with the keygen to run', () => {
    const r = run(['rebuild'], workerVars({ TUNNEL_KEY_FILE: path.join(dir, 'missing.key') }));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`docker.sh keygen ${path.join(dir, 'missing.key')}`);
    expect(docker(r, 'run')).toEqual([]);
  });

  it('the environment wins over the env file', () => {
    const r = run(['rebuild'], workerVars({ GPU_DEVICES: '0,1' }), { GPU_DEVICES: '3' });
    expect(r.code).toBe(0);
    expect(values(named(r, 'gpu-sidecar-worker')!, '--gpus')).toEqual(['"device=3"']);
  });
});

describe('docker.sh rebuild (worker)', () => {
  it('builds the image, starts Redis with AOF + noeviction, then runs the worker with its flags', () => {
    const r = run(['rebuild'], workerVars());
    expect(r.code).toBe(0);

    const build = docker(r, 'build');
    expect(build).toHaveLength(1);
    expect(build[0]).toEqual(
      expect.arrayContaining([
        '--file',
        path.join(root, 'docker', 'Dockerfile'),
        '--tag',
        'gpu-sidecar:latest',
      ]),
    );
    expect(build[0][build[0].length - 1]).toBe(root);

    const redis = named(r, 'gpu-sidecar-redis')!;
    expect(redis).toBeDefined();
    expect(redis.join(' ')).toContain('redis-server --appendonly yes');
    expect(redis.join(' ')).toContain('--maxmemory-policy noeviction');
    expect(values(redis, '--volume')).toEqual(['gpu-sidecar-redis-data:/data']);
    expect(values(redis, '--restart')).toEqual(['unless-stopped']);

    const w = named(r, 'gpu-sidecar-worker')!;
    expect(w).toBeDefined();
    // --gpus takes CSV: a list of devices must reach docker as "device=0,1", quotes included.
    expect(values(w, '--gpus')).toEqual(['"device=0,1"']);
    expect(values(w, '--user')).toEqual(['1000:1000']);
    expect(values(w, '--restart')).toEqual(['unless-stopped']);
    expect(values(w, '--network')).toEqual(['gpu-sidecar']);
    const volumes = values(w, '--volume');
    expect(volumes).toContain(`${data}:${data}`); // same path: job containers are siblings
    expect(volumes).toContain(`${socket}:/var/run/docker.sock`);
    expect(volumes).toContain(`${key}:${key}:ro`);
    expect(values(w, '--group-add')).toEqual([String(statSync(socket).gid)]);
    const envs = values(w, '--env');
    expect(envs).toEqual(
      expect.arrayContaining([
        `DATA_FOLDER=${data}`,
        `TUNNEL_KEY_FILE=${key}`,
        'REDIS_URL=redis://gpu-sidecar-redis:6379',
        'TUNNEL_LISTEN=0.0.0.0:8080',
        'API_LISTEN=0.0.0.0:8000',
        'GPU_DEVICES=0,1',
        'JOB_UID=1000:1000',
        'DOCKER_HOST=unix:///var/run/docker.sock',
      ]),
    );
    // The tunnel is published; the API only on the host's loopback.
    expect(values(w, '--publish')).toEqual(['0.0.0.0:8080:8080', '127.0.0.1:8000:8000']);
    expect(w.slice(-2)).toEqual(['gpu-sidecar:latest', 'worker']);

    // Build first (a failed build must not stop anything), Redis before the worker.
    const iBuild = indexOf(r, (c) => c[1] === 'build');
    const iRedis = indexOf(r, (c) => c[1] === 'run' && c.includes('gpu-sidecar-redis'));
    const iWorker = indexOf(r, (c) => c[1] === 'run' && c.includes('gpu-sidecar-worker'));
    expect(iBuild).toBeLessThan(iRedis);
    expect(iRedis).toBeLessThan(iWorker);
  });

  it('a second rebuild stops (with a grace period) and recreates the worker, never Redis', () => {
    expect(run(['rebuild'], workerVars()).code).toBe(0);
    const r = run(['rebuild'], workerVars());
    expect(r.code).toBe(0);

    expect(docker(r, 'stop')).toEqual([['docker', 'stop', '--time', '300', 'gpu-sidecar-worker']]);
    expect(docker(r, 'rm')).toEqual([['docker', 'rm', '--force', 'gpu-sidecar-worker']]);
    expect(named(r, 'gpu-sidecar-worker')).toBeDefined();
    // Redis: not removed, not stopped, not re-created. The queue (and its AOF) stays.
    expect(named(r, 'gpu-sidecar-redis')).toBeUndefined();
    for (const c of r.calls) {
      if (['rm', 'stop', 'kill'].includes(c[1])) expect(c).not.toContain('gpu-sidecar-redis');
      if (c[1] === 'volume') expect(c[2]).not.toBe('rm');
    }
    const iStop = indexOf(r, (c) => c[1] === 'stop');
    expect(indexOf(r, (c) => c[1] === 'build')).toBeLessThan(iStop);
  });

  it('a failed build leaves the running worker alone and exits non-zero', () => {
    expect(run(['rebuild'], workerVars()).code).toBe(0);
    const r = run(['rebuild'], workerVars(), { FAKE_DOCKER_BUILD_FAIL: '1' });
    expect(r.code).not.toBe(0);
    expect(docker(r, 'stop')).toEqual([]);
    expect(docker(r, 'rm')).toEqual([]);
    expect(docker(r, 'run')).toEqual([]);
  });

  it('a stopped Redis is started, not recreated', () => {
    expect(run(['rebuild'], workerVars()).code).toBe(0);
    writeFileSync(path.join(state, 'containers', 'gpu-sidecar-redis'), 'exited\n');
    const r = run(['rebuild'], workerVars());
    expect(r.code).toBe(0);
    expect(docker(r, 'start')).toEqual([['docker', 'start', 'gpu-sidecar-redis']]);
    expect(named(r, 'gpu-sidecar-redis')).toBeUndefined();
  });

  it('GPU_DEVICES=all gives --gpus all, none gives no --gpus, one UUID is quoted too', () => {
    const all = run(['rebuild'], workerVars({ GPU_DEVICES: 'all' }));
    expect(values(named(all, 'gpu-sidecar-worker')!, '--gpus')).toEqual(['all']);
    rmSync(path.join(state, 'containers'), { recursive: true });
    const none = run(['rebuild'], workerVars({ GPU_DEVICES: 'none' }));
    expect(values(named(none, 'gpu-sidecar-worker')!, '--gpus')).toEqual([]);
    rmSync(path.join(state, 'containers'), { recursive: true });
    const uuid = run(['rebuild'], workerVars({ GPU_DEVICES: 'GPU-8f6e' }));
    expect(values(named(uuid, 'gpu-sidecar-worker')!, '--gpus')).toEqual(['"device=GPU-8f6e"']);
  });

  it('other ports: published where TUNNEL_LISTEN and API_LISTEN say, the health check follows', () => {
    const experiments = path.join(dir, 'experiments');
    const r = run(
      ['rebuild'],
      workerVars({
        TUNNEL_LISTEN: '10.0.0.5:9443',
        API_LISTEN: '127.0.0.1:8100',
        EXPERIMENTS_DIR: experiments,
      }),
    );
    expect(r.code).toBe(0);
    const w = named(r, 'gpu-sidecar-worker')!;
    expect(values(w, '--publish')).toEqual(['10.0.0.5:9443:9443', '127.0.0.1:8100:8100']);
    expect(values(w, '--env')).toEqual(
      expect.arrayContaining([
        'TUNNEL_LISTEN=0.0.0.0:9443',
        'API_LISTEN=0.0.0.0:8100',
        'HEALTHCHECK_URL=http://127.0.0.1:8100/test',
        `EXPERIMENTS_DIR=${experiments}`,
      ]),
    );
    expect(values(w, '--volume')).toContain(`${experiments}:${experiments}:ro`);
    expect(statSync(experiments).isDirectory()).toBe(true);
  });

  it('REDIS_URL set: no Redis container, the worker uses that URL', () => {
    const r = run(['rebuild'], workerVars({ REDIS_URL: 'redis://redis.internal:6379/2' }));
    expect(r.code).toBe(0);
    expect(named(r, 'gpu-sidecar-redis')).toBeUndefined();
    expect(values(named(r, 'gpu-sidecar-worker')!, '--env')).toContain(
      'REDIS_URL=redis://redis.internal:6379/2',
    );
  });

  it('a comma list of keys is mounted and passed whole (rotation)', () => {
    const next = path.join(dir, 'next.key');
    writeFileSync(next, Buffer.alloc(32, 9), { mode: 0o600 });
    const r = run(['rebuild'], workerVars({ TUNNEL_KEY_FILE: `${next},${key}` }));
    expect(r.code).toBe(0);
    const w = named(r, 'gpu-sidecar-worker')!;
    expect(values(w, '--volume')).toEqual(
      expect.arrayContaining([`${next}:${next}:ro`, `${key}:${key}:ro`]),
    );
    expect(values(w, '--env')).toContain(`TUNNEL_KEY_FILE=${next},${key}`);
  });

  it('NODE_IMAGE and GPU_SIDECAR_IMAGE reach the build', () => {
    const r = run(
      ['rebuild'],
      workerVars({
        NODE_IMAGE: 'mirror.local/node:20-bookworm-slim',
        GPU_SIDECAR_IMAGE: 'lab/gsc:2',
      }),
    );
    expect(r.code).toBe(0);
    const b = docker(r, 'build')[0];
    expect(values(b, '--build-arg')).toEqual(['NODE_IMAGE=mirror.local/node:20-bookworm-slim']);
    expect(values(b, '--tag')).toEqual(['lab/gsc:2']);
    expect(named(r, 'gpu-sidecar-worker')!.slice(-2)).toEqual(['lab/gsc:2', 'worker']);
  });
});

describe('docker.sh waits for the daemon it started (issue #16.2)', () => {
  const ready = (r: Result) =>
    r.calls.findIndex((c) => c[0] === 'curl' && c.at(-1)?.endsWith('/health/ready'));

  it('rebuild, up and pull return only once the worker answers /health/ready', () => {
    for (const cmd of ['rebuild', 'up', 'pull']) {
      const r = run([cmd], workerVars());
      expect([cmd, r.code, r.stderr]).toEqual([cmd, 0, expect.not.stringContaining('ready')]);
      expect(r.calls).toContainEqual([
        'curl',
        '-fsS',
        '--max-time',
        '5',
        'http://127.0.0.1:8000/health/ready',
      ]);
      // After the container is there (run, or start when up finds it).
      const made = indexOf(r, (c) => c[1] === 'run' || c[1] === 'start');
      expect(made).toBeGreaterThanOrEqual(0);
      expect(ready(r)).toBeGreaterThan(made);
      expect(r.stdout).toContain('docker.sh: the worker is ready');
    }
  });

  it('a worker that crash-loops fails the rebuild (exit 1) with its last log lines', () => {
    const r = run(['rebuild'], workerVars(), {
      FAKE_CRASH: '1',
      FAKE_LOGS: "Error: EACCES: permission denied, mkdir '/srv/data/jobs/.uploads'",
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      'docker.sh: the worker is not running (restarting, restarted 3 times); its last log lines:',
    );
    expect(r.stderr).toContain(
      "    Error: EACCES: permission denied, mkdir '/srv/data/jobs/.uploads'",
    );
    expect(r.calls).toContainEqual(['docker', 'logs', '--tail', '30', 'gpu-sidecar-worker']);
    expect(r.stdout).not.toContain('done:');
  });

  it('a worker that never gets ready fails after READY_TIMEOUT, with its logs', () => {
    writeFileSync(path.join(state, 'image'), '');
    const r = run(['up'], workerVars({ READY_TIMEOUT: '2' }), {
      FAKE_NOT_READY: '1',
      FAKE_LOGS: 'redis: connect ECONNREFUSED',
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /docker\.sh: the worker did not answer http:\/\/127\.0\.0\.1:8000\/health\/ready within 2s: .*503/,
    );
    expect(r.stderr).toContain('    redis: connect ECONNREFUSED');
  });

  it('the relay: rebuild waits for its /healthz (a tunnel up)', () => {
    const r = run(['rebuild', 'relay'], {
      TUNNEL_KEY_FILE: key,
      TUNNEL_CONNECT: 'ws://gpu-1:8080',
    });
    expect(r.code).toBe(0);
    expect(r.calls.at(-1)).toEqual([
      'curl',
      '-fsS',
      '--max-time',
      '5',
      'http://127.0.0.1:9464/healthz',
    ]);
    expect(r.stdout).toContain("docker.sh: the relay's tunnel is ready");
  });

  it('DATA_FOLDER is made and given to JOB_UID, as the key is (run as root)', () => {
    expect(process.getuid?.()).toBe(0); // CI runs as root, as docker.sh on a GPU host does
    const r = run(['rebuild'], workerVars({ JOB_UID: '1000:1000' }));
    expect(r.code).toBe(0);
    expect([statSync(data).uid, statSync(data).gid]).toEqual([1000, 1000]);
    expect(r.stdout).toContain(`DATA_FOLDER ${data} is now owned by 1000:1000`);
  });

  it('an existing root-owned DATA_FOLDER is handed over; what a previous user left inside is named', () => {
    mkdirSync(path.join(data, 'jobs'), { recursive: true });
    const r = run(['rebuild'], workerVars({ JOB_UID: '1000:1000' }));
    expect(r.code).toBe(0);
    expect(statSync(data).uid).toBe(1000);
    expect(statSync(path.join(data, 'jobs')).uid).toBe(0); // never chowned recursively
    expect(r.stderr).toContain(
      `docker.sh: warning: ${path.join(data, 'jobs')} is not owned by 1000:1000`,
    );
    expect(r.stderr).toContain(`chown -R 1000:1000 ${data}`);
  });
});

describe('docker.sh doctor', () => {
  it('runs gpu-sidecar doctor inside the container, with the environment docker.sh gave it', () => {
    expect(run(['rebuild'], workerVars()).code).toBe(0);
    const r = run(['doctor'], workerVars());
    expect(r.code).toBe(0);
    expect(r.calls).toEqual([
      ['docker', 'container', 'inspect', 'gpu-sidecar-worker'],
      ['docker', 'exec', 'gpu-sidecar-worker', 'gpu-sidecar', 'doctor', 'worker'],
    ]);
  });

  it('says to create the container when there is none', () => {
    const r = run(['doctor', 'relay'], workerVars());
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'gpu-sidecar-relay does not exist (create it: ./docker.sh up relay)',
    );
  });
});

describe('docker.sh rebuild relay', () => {
  it('runs the relay on the host network with TUNNEL_CONNECT and its listen addresses', () => {
    const r = run(['rebuild', 'relay'], {
      TUNNEL_KEY_FILE: key,
      TUNNEL_CONNECT: 'ws://gpu-1:8080',
    });
    expect(r.code).toBe(0);
    const relay = named(r, 'gpu-sidecar-relay')!;
    expect(values(relay, '--network')).toEqual(['host']);
    expect(values(relay, '--restart')).toEqual(['unless-stopped']);
    expect(values(relay, '--env')).toEqual(
      expect.arrayContaining([
        'TUNNEL_CONNECT=ws://gpu-1:8080',
        'RELAY_LISTEN=127.0.0.1:8001',
        'ADMIN_LISTEN=127.0.0.1:9464',
        'HEALTHCHECK_URL=http://127.0.0.1:9464/healthz',
        `TUNNEL_KEY_FILE=${key}`,
      ]),
    );
    expect(values(relay, '--gpus')).toEqual([]);
    expect(relay.slice(-2)).toEqual(['gpu-sidecar:latest', 'relay']);
    expect(named(r, 'gpu-sidecar-redis')).toBeUndefined();
  });
});

describe('docker.sh pull', () => {
  it('git pull --ff-only in the repository, then the rebuild', () => {
    expect(run(['rebuild'], workerVars()).code).toBe(0);
    const r = run(['pull'], workerVars());
    expect(r.code).toBe(0);
    expect(r.calls[0]).toEqual(['git', '-C', root, 'pull', '--ff-only']);
    expect(docker(r, 'build')).toHaveLength(1);
    expect(named(r, 'gpu-sidecar-worker')).toBeDefined();
    expect(named(r, 'gpu-sidecar-redis')).toBeUndefined(); // queued jobs kept
    for (const c of docker(r, 'rm')) expect(c).not.toContain('gpu-sidecar-redis');
  });

  it('a failed pull builds nothing and stops nothing', () => {
    expect(run(['rebuild'], workerVars()).code).toBe(0);
    const r = run(['pull'], workerVars(), { FAKE_GIT_FAIL: '1' });
    expect(r.code).not.toBe(0);
    expect(r.calls).toEqual([['git', '-C', root, 'pull', '--ff-only']]);
  });
});

describe('docker.sh up, down, logs, keygen', () => {
  it('up without a built image says to rebuild', () => {
    const r = run(['up'], workerVars());
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('./docker.sh rebuild worker');
  });

  it('up creates missing containers, then starts existing ones', () => {
    writeFileSync(path.join(state, 'image'), '');
    const first = run(['up'], workerVars());
    expect(first.code).toBe(0);
    expect(named(first, 'gpu-sidecar-redis')).toBeDefined();
    expect(named(first, 'gpu-sidecar-worker')).toBeDefined();
    expect(docker(first, 'build')).toEqual([]);
    writeFileSync(path.join(state, 'containers', 'gpu-sidecar-worker'), 'exited\n');
    const again = run(['up'], workerVars());
    expect(again.code).toBe(0);
    expect(docker(again, 'run')).toEqual([]);
    expect(docker(again, 'start')).toEqual([['docker', 'start', 'gpu-sidecar-worker']]);
  });

  it('down removes the worker and stops Redis without removing it or its volume', () => {
    expect(run(['rebuild'], workerVars()).code).toBe(0);
    const r = run(['down'], workerVars());
    expect(r.code).toBe(0);
    expect(docker(r, 'rm')).toEqual([['docker', 'rm', '--force', 'gpu-sidecar-worker']]);
    expect(docker(r, 'stop')).toEqual([
      ['docker', 'stop', '--time', '300', 'gpu-sidecar-worker'],
      ['docker', 'stop', 'gpu-sidecar-redis'],
    ]);
    expect(docker(r, 'volume')).toEqual([]);
  });

  it('logs follows the named container', () => {
    expect(run(['logs', 'redis'], workerVars()).calls).toEqual([
      ['docker', 'logs', '--follow', '--tail', '200', 'gpu-sidecar-redis'],
    ]);
  });

  it('keygen writes a new private key file (the first of TUNNEL_KEY_FILE by default)', () => {
    const file = path.join(dir, 'keys', 'new.key');
    const r = run(['keygen'], { TUNNEL_KEY_FILE: `${file},${key}` });
    expect(r.code).toBe(0);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file).length).toBeGreaterThanOrEqual(32);
    expect(r.calls).toEqual([]);
  });

  it('keygen without a file or TUNNEL_KEY_FILE names the variable', () => {
    const r = run(['keygen']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('docker.sh: TUNNEL_KEY_FILE is not set (see .env.template)');
  });

  it('keygen refuses to overwrite a key', () => {
    const r = run(['keygen', key]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('not overwriting');
    expect(readFileSync(key)).toEqual(Buffer.alloc(32, 7));
  });
});

describe('docker.sh status', () => {
  it('worker: containers running, /test answered, GPUs listed from inside, Redis persistent: exit 0', () => {
    expect(run(['rebuild'], workerVars()).code).toBe(0);
    const r = run(['status'], workerVars());
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('ok    gpu-sidecar-worker: running');
    expect(r.stdout).toContain('ok    gpu-sidecar-redis: running');
    expect(r.stdout).toContain('ok    GET http://127.0.0.1:8000/test: {"response":"ok"}');
    expect(r.stdout).toContain('GPU 1: NVIDIA H100');
    expect(r.stdout).toContain('redis: appendonly yes, maxmemory-policy noeviction');
    expect(r.stdout).toContain('all ok');
    expect(r.calls).toContainEqual(['docker', 'exec', 'gpu-sidecar-worker', 'nvidia-smi', '-L']);
    expect(r.calls).toContainEqual([
      'curl',
      '-fsS',
      '--max-time',
      '5',
      'http://127.0.0.1:8000/test',
    ]);
    expect(r.calls).toContainEqual([
      'docker',
      'exec',
      'gpu-sidecar-redis',
      'redis-cli',
      'config',
      'get',
      'maxmemory-policy',
    ]);
    // status changes nothing
    for (const c of r.calls) expect(['run', 'rm', 'stop', 'start', 'build']).not.toContain(c[1]);
  });

  it('worker: each failure is one FAIL line with its fix, and the exit code is 1', () => {
    expect(run(['rebuild'], workerVars()).code).toBe(0);
    const r = run(['status'], workerVars(), {
      FAKE_CURL_FAIL: '1',
      FAKE_NO_GPU: '1',
      FAKE_REDIS_POLICY: 'allkeys-lru',
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/FAIL {2}GET http:\/\/127\.0\.0\.1:8000\/test: .*Connection refused/);
    expect(r.stdout).toMatch(/FAIL {2}GPUs inside gpu-sidecar-worker: .*NVIDIA Container Toolkit/);
    expect(r.stdout).toMatch(/FAIL {2}redis: .*maxmemory-policy 'allkeys-lru'/);
    expect(r.stdout).toContain('3 problem(s)');
  });

  it('worker: absent containers say how to create them', () => {
    const r = run(['status'], workerVars());
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      'FAIL  gpu-sidecar-worker: absent (create it: ./docker.sh up worker)',
    );
  });

  it('GPU_DEVICES=none skips the GPU check', () => {
    expect(run(['rebuild'], workerVars({ GPU_DEVICES: 'none' })).code).toBe(0);
    const r = run(['status'], workerVars({ GPU_DEVICES: 'none' }));
    expect(r.code).toBe(0);
    expect(r.calls.some((c) => c.includes('nvidia-smi'))).toBe(false);
  });

  it('relay: /test through the tunnel and /healthz; a failure hints at the firewall', () => {
    const vars = {
      TUNNEL_KEY_FILE: key,
      TUNNEL_CONNECT: 'ws://gpu-1:8080',
      RELAY_LISTEN: '127.0.0.1:8101',
    };
    expect(run(['rebuild', 'relay'], vars).code).toBe(0);
    const good = run(['status', 'relay'], vars);
    expect(good.code).toBe(0);
    expect(good.calls).toContainEqual([
      'curl',
      '-fsS',
      '--max-time',
      '5',
      'http://127.0.0.1:8101/test',
    ]);
    expect(good.calls).toContainEqual([
      'curl',
      '-fsS',
      '--max-time',
      '5',
      'http://127.0.0.1:9464/healthz',
    ]);
    const bad = run(['status', 'relay'], vars, { FAKE_CURL_FAIL: '1' });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(
      /FAIL {2}GET http:\/\/127\.0\.0\.1:8101\/test: .*firewall and cloud security list/,
    );
  });
});

describe('docker.sh is shellcheck clean', () => {
  it('shellcheck docker.sh reports nothing', () => {
    const r = spawnSync('shellcheck', ['--shell=bash', script], { encoding: 'utf8' });
    if (r.error)
      throw new Error(
        `shellcheck is not installed (apt-get install shellcheck): ${r.error.message}`,
      );
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('the fakes are plain sh and shellcheck clean too', () => {
    const files = [
      ...['docker', 'git', 'curl'].map((f) => path.join(fakeBin, f)),
      // The emulated hosts' stand-ins (test/support/host.ts).
      ...['sudo', 'ssh', 'systemctl', 'journalctl'].map((f) =>
        path.join(root, 'test', 'fixtures', 'fake-host', f),
      ),
    ];
    const r = spawnSync('shellcheck', ['--shell=sh', ...files], { encoding: 'utf8' });
    if (r.error)
      throw new Error(
        `shellcheck is not installed (apt-get install shellcheck): ${r.error.message}`,
      );
    expect(r.stdout + r.stderr).toBe('');
  });
});
