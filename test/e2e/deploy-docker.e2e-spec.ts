import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT } from '../support/daemon';
import { procedure } from '../support/deploy-doc';
import { testDockerHost } from '../support/docker';
import { BASE_IMAGE, ensureBaseImage } from '../support/image';
import { freePort } from '../support/ports';
import { waitUntil } from '../support/system';

jest.setTimeout(600_000);

const IMAGE = 'gpu-sidecar-deploy-test:latest';
const CONTAINERS = ['gpu-sidecar-worker', 'gpu-sidecar-relay', 'gpu-sidecar-redis'];

/**
 * docs/DEPLOY.md's Docker procedures, each command as written, on this machine against the test
 * Docker Engine, on loopback (containers publish on the engine's network, so the hosts cannot be
 * namespaces of their own here). What is substituted, as DEPLOY.md says: the clone is of this
 * checkout; /srv/gpu-sidecar is a temporary folder; $EDITOR writes the values the command's
 * comment names, with GPU_DEVICES=none, free ports and the registry-less build (NODE_IMAGE,
 * APP_FROM=prebuilt, REDIS_IMAGE: the base, which has redis-server); `ssh gpu-host` runs here
 * and gpu-host:8080 is the worker's published tunnel port. The image is built from this
 * checkout's dist/ and node_modules (hard-linked into the clone: what `npm ci && npm run build`
 * there would make). A docker job then runs through the relay, as JOB_UID 1000.
 */
describe('docs/DEPLOY.md, Docker: the GPU host and the front host from nothing', () => {
  const gpuSteps = procedure('GPU host from nothing', 'Docker');
  const frontSteps = procedure('Front host from nothing', 'Docker');
  const work = mkdtempSync(path.join(tmpdir(), 'gsc-deploy-docker-'));
  const srv = path.join(work, 'srv');
  const experiments = path.join(work, 'experiments');
  const editor = path.join(work, 'editor.sh');
  /** This checkout under the name the clone's folder takes from the URL. */
  const origin = path.join(work, 'origin', 'gpu-sidecar');
  let dockerEnv: NodeJS.ProcessEnv;
  let ports: { tunnel: number; api: number; relay: number; admin: number };
  const cwd = { gpu: path.join(work, 'gpu'), front: path.join(work, 'front') };

  const docker = (...args: string[]) =>
    spawnSync('docker', args, { env: dockerEnv, encoding: 'utf8', timeout: 120_000 });
  const cleanup = () => {
    docker('rm', '--force', ...CONTAINERS);
    docker('volume', 'rm', 'gpu-sidecar-redis-data');
    docker('network', 'rm', 'gpu-sidecar');
  };

  /** The document's text with this test's stand-ins (see above). */
  const local = (command: string) =>
    command
      .replaceAll('https://github.com/LAB/gpu-sidecar', origin)
      .replaceAll('/srv/gpu-sidecar', srv)
      .replaceAll('gpu-host:8080', `127.0.0.1:${ports.tunnel}`);

  /** Runs a step in `host`'s folder (where the previous one ended), as a terminal would. */
  function step(host: 'gpu' | 'front', command: string, edits: string[] = []) {
    const marker = path.join(work, `${host}.cwd`);
    const r = spawnSync(
      'bash',
      ['-c', `cd "$GSC_CWD" || exit 1\n${local(command)}\nrc=$?\npwd > "${marker}"\nexit $rc\n`],
      {
        encoding: 'utf8',
        timeout: 400_000,
        env: {
          PATH: `${path.join(ROOT, 'test', 'fixtures', 'fake-host')}:${path.dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
          HOME: process.env.HOME ?? '/root',
          GSC_CWD: cwd[host],
          GSC_SSH_LOCAL: '1',
          GSC_EDITS: edits.join('\n'),
          EDITOR: editor,
          DOCKER_HOST: dockerEnv.DOCKER_HOST,
          READY_TIMEOUT: '120',
        },
      },
    );
    try {
      cwd[host] = readFileSync(marker, 'utf8').trim();
    } catch {
      /* it never got there */
    }
    if (r.status !== 0)
      throw new Error(`${host}$ ${command}\nexit ${r.status}\n${r.stdout}\n${r.stderr}`);
    return r;
  }

  /**
   * What `npm ci && npm run build` would make in a clone (APP_FROM=prebuilt builds from it):
   * this checkout's node_modules, hard-linked (a copy of hundreds of MB otherwise), and dist/.
   */
  const built = (clone: string) => {
    for (const [what, args] of [
      ['node_modules', ['-al']],
      ['dist', ['-a']],
    ] as const) {
      const r = spawnSync('cp', [...args, path.join(ROOT, what), path.join(clone, what)]);
      if (r.status !== 0) throw new Error(`cp ${what}: ${r.stderr.toString()}`);
    }
  };

  /** What the registry-less build and this machine's ports need in a .env. */
  const buildVars = () => [
    `DOCKER_HOST=${dockerEnv.DOCKER_HOST}`,
    `GPU_SIDECAR_IMAGE=${IMAGE}`,
    `NODE_IMAGE=${BASE_IMAGE}`,
    'APP_FROM=prebuilt',
  ];

  beforeAll(async () => {
    dockerEnv = { ...process.env, DOCKER_HOST: testDockerHost() };
    ensureBaseImage(dockerEnv);
    cleanup();
    ports = {
      tunnel: await freePort(),
      api: await freePort(),
      relay: await freePort(),
      admin: await freePort(),
    };
    mkdirSync(cwd.gpu);
    mkdirSync(cwd.front);
    mkdirSync(experiments);
    mkdirSync(path.dirname(origin));
    symlinkSync(ROOT, origin);
    copyFileSync(
      path.join(ROOT, 'examples', 'experiments', 'hello-docker.yaml'),
      path.join(experiments, 'hello-docker.yaml'),
    );
    // $EDITOR FILE: sets each GSC_EDITS line's variable in FILE (replaced where it is, else added).
    writeFileSync(
      editor,
      '#!/bin/sh\nprintf "%s\\n" "$GSC_EDITS" | while IFS= read -r kv; do\n' +
        '  [ -n "$kv" ] || continue\n  k=${kv%%=*}\n' +
        '  if grep -q "^$k=" "$1"; then sed -i "s|^$k=.*|$kv|" "$1"; else printf "%s\\n" "$kv" >> "$1"; fi\n' +
        'done\n',
    );
    chmodSync(editor, 0o755);
  });
  afterAll(() => {
    cleanup();
    docker('rmi', '--force', IMAGE);
    // The legacy builder keeps each stage as an untagged image; ours carry the base's label.
    const dangling = docker(
      'images',
      '-q',
      '-f',
      'dangling=true',
      '-f',
      'label=org.gpu-sidecar.node-version',
    );
    const ids = dangling.stdout.split('\n').filter(Boolean);
    if (ids.length) docker('rmi', ...ids);
    rmSync(work, { recursive: true, force: true });
  });

  it('each host takes at most 5 commands', () => {
    expect(gpuSteps.length).toBeLessThanOrEqual(5);
    expect(frontSteps.length).toBeLessThanOrEqual(5);
  });

  it("GPU host, steps 1-3: clone, .env as the comment says, keygen: the key is JOB_UID's", () => {
    step('gpu', gpuSteps[0]);
    // What `npm ci && npm run build` would make in the clone, for APP_FROM=prebuilt.
    built(cwd.gpu);
    const named = /#\s*(.*)$/.exec(gpuSteps[1])![1].split(/,\s*(?=[A-Z_]+=)/);
    expect(named).toEqual(
      expect.arrayContaining(['JOB_UID=1000:1000', 'TUNNEL_KEY_FILE=/srv/gpu-sidecar/tunnel.key']),
    );
    step('gpu', gpuSteps[1], [
      ...named.map(local),
      'GPU_DEVICES=none',
      `TUNNEL_LISTEN=127.0.0.1:${ports.tunnel}`,
      `API_LISTEN=127.0.0.1:${ports.api}`,
      `EXPERIMENTS_DIR=${experiments}`,
      `REDIS_IMAGE=${BASE_IMAGE}`,
      ...buildVars(),
    ]);
    step('gpu', gpuSteps[2]);
    const key = statSync(path.join(srv, 'tunnel.key'));
    expect([key.uid, key.gid, key.mode & 0o777, key.size]).toEqual([1000, 1000, 0o600, 32]);
  });

  it('GPU host, step 4: rebuild builds, starts Redis and the worker as JOB_UID, waits until ready', () => {
    const r = step('gpu', gpuSteps[3]);
    expect(r.stdout).toMatch(/docker\.sh: the worker is ready: \{"status":"ok"/);
    // DATA_FOLDER made and handed to JOB_UID: the worker writes jobs/ and its uploads there.
    const data = statSync(path.join(srv, 'data'));
    expect([data.uid, data.gid]).toEqual([1000, 1000]);
    expect(
      docker(
        'inspect',
        '-f',
        '{{.Config.User}} {{.State.Status}}',
        'gpu-sidecar-worker',
      ).stdout.trim(),
    ).toBe('1000:1000 running');
  });

  it('GPU host, step 5: status all ok; doctor inside the container passes', () => {
    const r = step('gpu', gpuSteps[4]);
    expect(r.stdout).toContain('ok    gpu-sidecar-worker: running');
    expect(r.stdout).toContain('ok    redis: appendonly yes, maxmemory-policy noeviction');
    expect(r.stdout).toContain('all ok');
    expect(r.stdout).toContain('gpu-sidecar doctor (worker)');
    expect(r.stdout).toMatch(/^ok {3}docker: unix:\/\/\/var\/run\/docker\.sock: Docker /m);
    expect(r.stdout).toMatch(/^ok {3}data folder: .*\/srv\/data: writable/m);
    expect(r.stdout).toMatch(/^ok {3}experiments: .*: hello-docker$/m);
    expect(r.stdout).toMatch(/^all checks passed/m);
  });

  it('front host: clone, .env, the key over ssh, rebuild relay (waits for the tunnel), status', () => {
    step('front', frontSteps[0]);
    built(cwd.front);
    step('front', frontSteps[1]);
    // The test's own lines, as an admin would add with an editor: ports and the build.
    writeFileSync(
      path.join(cwd.front, '.env'),
      `${readFileSync(path.join(cwd.front, '.env'), 'utf8')}${[
        `RELAY_LISTEN=127.0.0.1:${ports.relay}`,
        `ADMIN_LISTEN=127.0.0.1:${ports.admin}`,
        ...buildVars(),
      ].join('\n')}\n`,
    );
    step('front', frontSteps[2]);
    expect(readFileSync(path.join(cwd.front, 'tunnel.key'))).toEqual(
      readFileSync(path.join(srv, 'tunnel.key')),
    );
    expect(statSync(path.join(cwd.front, 'tunnel.key')).mode & 0o777).toBe(0o600);
    expect(step('front', frontSteps[3]).stdout).toContain("docker.sh: the relay's tunnel is ready");
    const r = step('front', frontSteps[4]);
    expect(r.stdout).toContain(`ok    GET http://127.0.0.1:${ports.relay}/test: {"response":"ok"}`);
    expect(r.stdout).toContain('all ok');
  });

  it('a docker job submitted through the relay runs in its own container, as JOB_UID', async () => {
    const relay = `http://127.0.0.1:${ports.relay}`;
    const res = await fetch(`${relay}/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ experiment: 'hello-docker', params: { name: 'Ada' } }),
    });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    const state = await waitUntil(
      'the docker job to end',
      async () => {
        const s = ((await (await fetch(`${relay}/jobs/${id}`)).json()) as { state: string }).state;
        return ['succeeded', 'failed', 'cancelled'].includes(s) && s;
      },
      120_000,
    );
    expect(state).toBe('succeeded');
    expect(await (await fetch(`${relay}/jobs/${id}/files/hello.txt`)).text()).toMatch(
      /^Hello from a container, as 1000, to \{\s*"name":\s*"Ada"\s*\}/,
    );
  });
});
