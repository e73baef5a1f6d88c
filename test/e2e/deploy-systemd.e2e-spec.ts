import { procedure, SYSTEMD_STEP_1 } from '../support/deploy-doc';
import { startHosts, type CommandResult, type Host, type Hosts } from '../support/host';
import { waitUntil } from '../support/system';

jest.setTimeout(300_000);

/**
 * docs/DEPLOY.md's systemd procedures, each command as written, on two emulated hosts
 * (test/support/host.ts): `gpu-host` and `front`, each its own network namespace joined by a
 * veth pair, mount namespace (copy-on-write /etc, /opt, /usr/local, /var/lib, /run) and host
 * name; systemctl is the fake-systemd stand-in that runs the installed unit as the unit says.
 * Step 1 of each (clone, npm ci, build) is this checkout at /opt/gpu-sidecar: the quick-start
 * test runs a clone and `npm ci` as written.
 */
describe('docs/DEPLOY.md, systemd: the GPU host and the front host from nothing', () => {
  const gpuSteps = procedure('GPU host from nothing', 'systemd');
  const frontSteps = procedure('Front host from nothing', 'systemd');
  let hosts: Hosts;
  let gpu: Host;
  let front: Host;
  /** The command `install worker` printed for the front host. */
  let printed = '';
  let fingerprint = '';

  beforeAll(async () => {
    hosts = await startHosts(['gpu-host', 'front']);
    [gpu, front] = hosts.hosts;
  });
  afterAll(async () => hosts?.stop());

  /** Runs a step; a failure shows what it printed. */
  async function step(host: Host, command: string, timeoutMs = 150_000): Promise<CommandResult> {
    const r = await host.run(command, { timeoutMs });
    if (r.code !== 0)
      throw new Error(`${host.name}$ ${command}\nexit ${r.code}\n${r.stdout}\n${r.stderr}`);
    return r;
  }
  /** The relay reconnects to a restarted worker with backoff: until then a request is reset. */
  const tunnelBack = () =>
    waitUntil(
      'the relay to reach the restarted worker',
      async () =>
        (await front.run('curl -sf http://127.0.0.1:8001/test')).stdout === '{"response":"ok"}',
      30_000,
    );
  const stat = async (host: Host, paths: string[]) =>
    (await step(host, `stat -c '%n %U:%G %a' ${paths.join(' ')}`)).stdout.trim().split('\n');

  it('each host takes at most 5 commands; step 1 is the clone, npm ci and build', async () => {
    expect(gpuSteps.length).toBeLessThanOrEqual(5);
    expect(frontSteps.length).toBeLessThanOrEqual(5);
    expect([gpuSteps[0], frontSteps[0]]).toEqual([SYSTEMD_STEP_1, SYSTEMD_STEP_1]);
    for (const h of [gpu, front])
      await step(
        h,
        'test -f /opt/gpu-sidecar/dist/apps/cli/src/main.js && test -d /opt/gpu-sidecar/node_modules',
      );
  });

  it('GPU host, step 2: install worker: user, folders, key, env file, unit, started and ready', async () => {
    const r = await step(gpu, gpuSteps[1]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('created user gpu-sidecar');
    expect(r.stdout).toMatch(
      /^started gpu-sidecar-worker\.service \(ready: http:\/\/127\.0\.0\.1:8000\/health\/ready answered 200\)$/m,
    );
    fingerprint = /fingerprint ([0-9a-f]{16})/.exec(r.stdout)![1];
    printed = r.stdout
      .split('\n')
      .find((l) => l.includes(' install relay '))!
      .trim();
    expect(
      await stat(gpu, [
        '/etc/gpu-sidecar',
        '/etc/gpu-sidecar/experiments',
        '/etc/gpu-sidecar/tunnel.key',
        '/etc/gpu-sidecar/worker.env',
        '/var/lib/gpu-sidecar',
        '/etc/systemd/system/gpu-sidecar-worker.service',
      ]),
    ).toEqual([
      '/etc/gpu-sidecar root:root 755',
      '/etc/gpu-sidecar/experiments root:root 755',
      '/etc/gpu-sidecar/tunnel.key root:root 600',
      '/etc/gpu-sidecar/worker.env root:root 600',
      '/var/lib/gpu-sidecar gpu-sidecar:gpu-sidecar 750',
      '/etc/systemd/system/gpu-sidecar-worker.service root:root 644',
    ]);
    expect((await step(gpu, 'getent passwd gpu-sidecar')).stdout).toMatch(
      /^gpu-sidecar:x:\d+:\d+::\/var\/lib\/gpu-sidecar:\/usr\/sbin\/nologin$/m,
    );
    expect((await step(gpu, 'readlink /usr/local/bin/gpu-sidecar')).stdout.trim()).toBe(
      '/opt/gpu-sidecar/bin/gpu-sidecar',
    );
    // The unit sets these three: the env file must not override them.
    expect(gpu.read('/etc/gpu-sidecar/worker.env')).not.toMatch(
      /^(TUNNEL_KEY_FILE|DATA_FOLDER|EXPERIMENTS_DIR)=/m,
    );
    // The daemon runs as gpu-sidecar, in the docker group, from a private copy of the key.
    const pid = gpu.read('/run/fake-systemd/gpu-sidecar-worker.service.pid').trim();
    const who = await step(gpu, `id -u gpu-sidecar; getent group docker`);
    const [uid, docker] = who.stdout.trim().split('\n');
    const status = gpu.read(`/proc/${pid}/status`);
    expect(/^Uid:\s*(\d+)\s+(\d+)/m.exec(status)!.slice(1)).toEqual([uid, uid]);
    expect(/^Groups:\s*(.*)$/m.exec(status)![1].split(/\s+/)).toContain(docker.split(':')[2]);
    expect(await stat(gpu, ['/run/credentials/gpu-sidecar-worker.service/tunnel.key'])).toEqual([
      '/run/credentials/gpu-sidecar-worker.service/tunnel.key gpu-sidecar:gpu-sidecar 400',
    ]);
  });

  it('GPU host, step 3: doctor reads the installed unit and passes; /test answers', async () => {
    const r = await step(gpu, gpuSteps[2]);
    expect(r.stdout).toContain(
      'configuration: systemd unit /etc/systemd/system/gpu-sidecar-worker.service (Environment=, ' +
        'EnvironmentFile=/etc/gpu-sidecar/worker.env, LoadCredential=tunnel.key:/etc/gpu-sidecar/tunnel.key)',
    );
    expect(r.stdout).toContain(
      `ok   key file: /etc/gpu-sidecar/tunnel.key: fingerprint ${fingerprint}`,
    );
    expect(r.stdout).toMatch(/^ok {3}data folder: \/var\/lib\/gpu-sidecar\/data: writable/m);
    expect(r.stdout).toMatch(/^all checks passed/m);
    expect(r.stdout.endsWith('{"response":"ok"}')).toBe(true);
  });

  it("doctor --env-file /etc/gpu-sidecar/worker.env checks the unit's view too (issue #16.3)", async () => {
    const r = await step(
      gpu,
      'sudo gpu-sidecar doctor worker --env-file /etc/gpu-sidecar/worker.env',
    );
    expect(r.stdout).toContain(
      'configuration: systemd unit /etc/systemd/system/gpu-sidecar-worker.service',
    );
    expect(r.stdout).not.toContain('TUNNEL_KEY_FILE');
  });

  it('front host, step 2 is the line install worker printed: the key over ssh, the relay installed and its tunnel up', async () => {
    expect(frontSteps[1]).toBe(printed);
    const r = await step(front, frontSteps[1]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain(
      `created /etc/gpu-sidecar/tunnel.key (root:root 600, fingerprint ${fingerprint})`,
    );
    expect(r.stdout).toMatch(
      /^started gpu-sidecar-relay\.service \(ready: http:\/\/127\.0\.0\.1:9464\/healthz answered 200\)$/m,
    );
    expect(
      await stat(front, ['/etc/gpu-sidecar/tunnel.key', '/etc/gpu-sidecar/relay.env']),
    ).toEqual([
      '/etc/gpu-sidecar/tunnel.key root:root 600',
      '/etc/gpu-sidecar/relay.env root:root 600',
    ]);
    expect(front.read('/etc/gpu-sidecar/relay.env')).toMatch(
      /^TUNNEL_CONNECT=ws:\/\/gpu-host:8080$/m,
    );
  });

  it('front host, step 3: doctor authenticates the tunnel over the link; /test answers from the GPU host', async () => {
    const r = await step(front, frontSteps[2]);
    expect(r.stdout).toContain(
      'configuration: systemd unit /etc/systemd/system/gpu-sidecar-relay.service',
    );
    expect(r.stdout).toContain(
      `ok   tunnel: ws://gpu-host:8080/: authenticated with key ${fingerprint}`,
    );
    expect(r.stdout).toContain('ok   relay: running; 1 of 1 tunnels up');
    expect(r.stdout.endsWith('{"response":"ok"}')).toBe(true);
    // The worker saw the front host's address on the link, not loopback.
    expect(gpu.read('/var/log/fake-systemd/gpu-sidecar-worker.service.log')).toContain(
      `"peer":"${front.address}:`,
    );
  });

  it('adding an experiment: a job submitted on the front host runs on the GPU host as gpu-sidecar', async () => {
    const add = procedure('GPU host from nothing', 'systemd', 1);
    for (const c of add) await step(gpu, c);
    await tunnelBack();
    // No restart: the worker's watch on EXPERIMENTS_DIR picks the file up "within about a second".
    await waitUntil(
      'the worker to install the new experiment',
      async () =>
        (await front.run('curl -s http://127.0.0.1:8001/experiments')).stdout.includes(
          '"name":"hello"',
        ),
      10_000,
    );
    const submit = await step(
      front,
      `curl -s -XPOST -H 'content-type: application/json' -d '{"experiment":"hello","params":{"name":"Ada"}}' http://127.0.0.1:8001/jobs`,
    );
    const id = (JSON.parse(submit.stdout) as { id: string }).id;
    await waitUntil(
      'the job to succeed',
      async () => {
        const r = await front.run(`curl -s http://127.0.0.1:8001/jobs/${id}`);
        return (JSON.parse(r.stdout) as { state: string }).state === 'succeeded';
      },
      60_000,
    );
    expect(
      (await step(front, `curl -s http://127.0.0.1:8001/jobs/${id}/files/hello.txt`)).stdout,
    ).toBe('Hello, Ada!\n');
    expect(
      await stat(gpu, [`/var/lib/gpu-sidecar/data/jobs/hello/${id}/output/hello.txt`]),
    ).toEqual([
      `/var/lib/gpu-sidecar/data/jobs/hello/${id}/output/hello.txt gpu-sidecar:gpu-sidecar 640`,
    ]);
  });

  it('updating: install worker again keeps the key and the env file, restarts, waits until ready', async () => {
    const r = await step(gpu, 'sudo gpu-sidecar install worker');
    expect(r.stdout).toContain(
      `kept    /etc/gpu-sidecar/tunnel.key (root:root 600, fingerprint ${fingerprint})`,
    );
    expect(r.stdout).toContain('kept    /etc/gpu-sidecar/worker.env');
    expect(r.stdout).toContain('kept    user gpu-sidecar');
    expect(r.stdout).toMatch(/^started gpu-sidecar-worker\.service/m);
    await tunnelBack();
  });

  it('the installed units pass systemd-analyze verify on their host', async () => {
    for (const [h, unit] of [
      [gpu, 'gpu-sidecar-worker.service'],
      [front, 'gpu-sidecar-relay.service'],
    ] as const) {
      const r = await h.run(`systemd-analyze verify /etc/systemd/system/${unit}`);
      const findings = (r.stdout + r.stderr).split('\n').filter((l) => l.includes('gpu-sidecar'));
      expect([unit, findings, r.code]).toEqual([unit, [], 0]);
    }
  });
});
