/* eslint-disable @typescript-eslint/no-explicit-any -- the API answers JSON of any shape */
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exitCode, ROOT, runCli } from '../support/daemon';
import { startPair, waitUntil, type Pair } from '../support/system';

jest.setTimeout(120_000);

/**
 * A worker with a docker experiment installed and no Docker Engine (the quick start on a laptop,
 * a GPU host whose Docker is down): only the docker experiment's jobs wait; the worker stays
 * ready, /health says `degraded` and names them, `status` exits 0, and a process job runs
 * through the relay.
 */
describe('worker without a Docker Engine, a docker experiment installed', () => {
  let pair: Pair;
  let exp: string;
  let api: string;
  let relay: string;
  beforeAll(async () => {
    exp = mkdtempSync(path.join(tmpdir(), 'gsc-no-docker-exp-'));
    for (const f of ['hello.yaml', 'hello-docker.yaml'])
      copyFileSync(path.join(ROOT, 'examples', 'experiments', f), path.join(exp, f));
    pair = await startPair({
      worker: { EXPERIMENTS_DIR: exp, DOCKER_HOST: 'unix:///nonexistent/docker.sock' },
    });
    api = `http://127.0.0.1:${pair.ports.api}`;
    relay = `http://127.0.0.1:${pair.ports.relay}`;
  });
  afterAll(async () => {
    await pair?.stop();
    rmSync(exp, { recursive: true, force: true });
  });
  it('/health/ready is 200 and /health is degraded (200), naming the docker experiment', async () => {
    const ready = await fetch(`${api}/health/ready`);
    const r = (await ready.json()) as any;
    expect([ready.status, r.details.docker]).toEqual([
      200,
      expect.objectContaining({ status: 'up', required: true, reachable: false }),
    ]);
    const res = await fetch(`${api}/health`);
    const h = (await res.json()) as any;
    expect([res.status, h.status, h.ready]).toEqual([200, 'degraded', true]);
    expect(h.problems).toEqual([
      expect.stringMatching(
        /^docker: Docker Engine at unix:\/\/\/nonexistent\/docker\.sock is unreachable: .*: docker experiments \(hello-docker\) wait until it answers; the others run$/,
      ),
    ]);
  });

  it('`gpu-sidecar status` exits 0 and shows the problem', async () => {
    const p = runCli(
      ['status', '--url', api, '--relay-url', `http://127.0.0.1:${pair.ports.admin}`],
      { NO_COLOR: '1' },
    );
    const code = await exitCode(p, 30_000);
    expect(p.stdout()).toContain('docker experiments (hello-docker) wait until it answers');
    expect(code).toBe(0);
  });

  it('a process job runs through the relay; the docker one waits in the queue', async () => {
    const submit = async (experiment: string) => {
      const res = await fetch(`${relay}/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ experiment, params: { name: 'Ada' } }),
      });
      expect(res.status).toBe(201);
      return ((await res.json()) as { id: string }).id;
    };
    const docker = await submit('hello-docker');
    const hello = await submit('hello');
    const state = async (id: string) =>
      ((await (await fetch(`${relay}/jobs/${id}`)).json()) as { state: string }).state;
    await waitUntil('the process job to succeed', async () => (await state(hello)) === 'succeeded');
    expect(await (await fetch(`${relay}/jobs/${hello}/files/hello.txt`)).text()).toBe(
      'Hello, Ada!\n',
    );
    expect(await state(docker)).toBe('queued');
  });
});
