import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JOB_LABELS } from '../../libs/docker/src';
import { DockerEngine } from '../../libs/jobs/src';
import { JobsClient } from '../../libs/jobs/src/testing/client';
import { runCli, type DaemonProcess } from '../support/daemon';
import { TEST_IMAGE, testDockerHost } from '../support/docker';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, workerEnvIn } from '../support/system';

jest.setTimeout(180_000);

// First run: marks output/ and hangs; a second run (the retry) finishes at once.
const HOLD = (name: string, attempts: number) => `name: ${name}
runner: docker
image: ${TEST_IMAGE}
command: ["sh", "-c", "if [ -e /job/output/first ]; then echo second run; echo done > /job/output/result; exit 0; fi; touch /job/output/first; echo '::progress:: 10 up'; sleep 120"]
attempts: ${attempts}
params: { type: object }
`;

describe('Docker jobs through the built worker, which is SIGKILLed mid-run', () => {
  const host = testDockerHost();
  const engine = new DockerEngine(host);
  const worker = `e2e-docker-${randomBytes(4).toString('hex')}`;
  let redis: TestRedis;
  let daemon: DaemonProcess | undefined;
  let env: Record<string, string>;
  let data: string;
  let api: JobsClient;

  const containersOf = async (job?: string) =>
    (await engine.listByLabel(JOB_LABELS.worker, worker)).filter(
      (c) => !job || c.labels[JOB_LABELS.job] === job,
    );
  const start = async () => {
    daemon = runCli(['worker'], env);
    await daemon.waitForLog('worker ready', 60_000);
  };

  beforeAll(async () => {
    redis = await startRedis();
    const dir = mkdtempSync(path.join(tmpdir(), 'gsc-e2e-docker-'));
    data = path.join(dir, 'data');
    const experiments = path.join(dir, 'experiments');
    mkdirSync(experiments);
    writeFileSync(path.join(experiments, 'hold.yaml'), HOLD('hold', 2));
    writeFileSync(path.join(experiments, 'hold-once.yaml'), HOLD('hold-once', 1));
    const w = await workerEnvIn(dir, keygen(dir), {
      folders: { data, experiments },
      name: worker,
      redisUrl: redis.url,
      extra: { WORKER_CONCURRENCY: '2', DOCKER_HOST: host, JOB_UID: '1234:1234' },
    });
    env = w.env;
    api = new JobsClient(`http://127.0.0.1:${w.api}`);
    await start();
  });

  afterAll(async () => {
    await daemon?.stop();
    for (const c of await containersOf()) await engine.remove(c.id);
    redis?.stop();
  });

  it('ends each job exactly once (retried, or failed "worker restarted") and leaves no container', async () => {
    const retried = await api.submit('hold');
    const once = await api.submit('hold-once');
    for (const id of [retried, once]) {
      await api.waitFor(id, ['running'], 60_000);
      // Running as far as Docker is concerned, too.
      for (let i = 0; i < 300 && (await containersOf(id)).length === 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await containersOf(id)).toHaveLength(1);
    }
    await new Promise((r) => setTimeout(r, 500));

    expect(await daemon!.stop('SIGKILL')).toBe('SIGKILL');
    // Containers outlive their daemon: only reconciliation can remove them.
    expect(await containersOf()).toHaveLength(2);

    await start();
    const a = await api.waitFor(retried, ['succeeded', 'failed', 'cancelled'], 90_000);
    const b = await api.waitFor(once, ['succeeded', 'failed', 'cancelled'], 90_000);
    expect(a).toMatchObject({ state: 'succeeded', attempts: 2, exitCode: 0 });
    expect(b).toMatchObject({ state: 'failed', error: 'worker restarted' });
    expect(await containersOf()).toEqual([]);

    // Past a stalled-check interval: nothing runs a third time or changes the endings.
    await new Promise((r) => setTimeout(r, 7_000));
    expect(await api.job(retried)).toEqual(a);
    expect(await api.job(once)).toEqual(b);
    expect(await containersOf()).toEqual([]);
    const dir = (id: string, exp: string) => path.join(data, 'jobs', exp, id);
    const log = readFileSync(path.join(dir(retried, 'hold'), 'logs', 'output.log'), 'utf8');
    expect(log.match(/second run/g)).toHaveLength(1);
    expect(readFileSync(path.join(dir(retried, 'hold'), 'output', 'result'), 'utf8')).toBe(
      'done\n',
    );
    for (const [id, exp, rec] of [
      [retried, 'hold', a],
      [once, 'hold-once', b],
    ] as const) {
      const onDisk = JSON.parse(readFileSync(path.join(dir(id, exp), 'job.json'), 'utf8'));
      expect(onDisk).toMatchObject({ state: rec.state, finishedAt: rec.finishedAt });
    }
  });
});
