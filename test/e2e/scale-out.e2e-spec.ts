import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JobsClient, writeTestExperiments } from '../../libs/jobs/src/testing/client';
import { runCli, type DaemonProcess } from '../support/daemon';
import { freePort } from '../support/ports';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, waitForTunnel, workerEnvIn } from '../support/system';

jest.setTimeout(240_000);

/**
 * Several GPU hosts on one queue (README, "Several GPU hosts"): two workers (separate processes and
 * WORKER_NAMEs, one Redis, one shared DATA_FOLDER) behind one relay that dials both.
 */
const WORK = `name: work
runner: process
command: ["sh", "-c", "echo $JOB_ID >> $RAN_LOG; sleep 0.2; echo \\"done $JOB_ID\\" > $JOB_OUTPUT/result.txt"]
attempts: 1
env: { RAN_LOG: "RANLOG" }
params: { type: object }
`;

interface Worker {
  name: string;
  api: JobsClient;
  env: Record<string, string>;
  tunnelPort: number;
  proc?: DaemonProcess;
  start(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe('two workers on one queue behind one relay', () => {
  let dir: string;
  let redis: TestRedis;
  let ranLog: string;
  let a: Worker;
  let b: Worker;
  let relay: DaemonProcess;
  let relayApi: JobsClient;

  async function worker(name: string, keyFile: string): Promise<Worker> {
    const { env, tunnel, api } = await workerEnvIn(dir, keyFile, {
      folders: { data: path.join(dir, 'shared-data'), experiments: path.join(dir, 'experiments') },
      name,
      redisUrl: redis.url,
      extra: { WORKER_CONCURRENCY: '4' },
    });
    const w: Worker = {
      name,
      tunnelPort: tunnel,
      api: new JobsClient(`http://127.0.0.1:${api}`),
      env,
      start: async () => {
        w.proc = runCli(['worker'], w.env, dir);
        await w.proc.waitForLog('worker ready', 30_000);
      },
    };
    await w.start();
    return w;
  }

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-scale-'));
    redis = await startRedis();
    ranLog = path.join(dir, 'ran.log');
    const experiments = path.join(dir, 'experiments');
    mkdirSync(experiments);
    writeTestExperiments(experiments, ranLog, 4);
    writeFileSync(path.join(experiments, 'work.yaml'), WORK.replace('RANLOG', ranLog));
    const keyFile = keygen(dir);
    a = await worker('host-a', keyFile);
    b = await worker('host-b', keyFile);
    const relayPort = await freePort();
    const adminPort = await freePort();
    relay = runCli(
      ['relay'],
      {
        TUNNEL_KEY_FILE: keyFile,
        TUNNEL_CONNECT: `ws://127.0.0.1:${a.tunnelPort},ws://127.0.0.1:${b.tunnelPort}`,
        RELAY_LISTEN: `127.0.0.1:${relayPort}`,
        ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
      },
      dir,
    );
    await relay.waitForLog('relay ready');
    await waitForTunnel(adminPort);
    await until('both tunnels up', async () => {
      const h = (await (await fetch(`http://127.0.0.1:${adminPort}/healthz`)).json()) as {
        tunnels: { state: string }[];
      };
      return h.tunnels.filter((t) => t.state === 'up').length === 2 ? true : undefined;
    });
    relayApi = new JobsClient(`http://127.0.0.1:${relayPort}`);
  });

  afterAll(async () => {
    await Promise.all([relay?.stop(), a?.proc?.stop(), b?.proc?.stop()]);
    redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const ranCounts = (): Map<string, number> => {
    const counts = new Map<string, number>();
    let text = '';
    try {
      text = readFileSync(ranLog, 'utf8');
    } catch {
      /* nothing ran yet */
    }
    for (const id of text.split('\n').filter(Boolean)) counts.set(id, (counts.get(id) ?? 0) + 1);
    return counts;
  };

  it('spreads 100 jobs over both workers, runs each once, serves every result through the relay', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) ids.push(await relayApi.submit('work', {}));
    const finals = await Promise.all(
      ids.map((id) => relayApi.waitFor(id, ['succeeded', 'failed', 'cancelled'], 120_000)),
    );
    expect(finals.every((f) => f.state === 'succeeded')).toBe(true);
    const byWorker = new Map<string, number>();
    for (const f of finals) byWorker.set(f.worker, (byWorker.get(f.worker) ?? 0) + 1);
    expect([...byWorker.keys()].sort()).toEqual(['host-a', 'host-b']);
    const counts = ranCounts();
    expect(ids.every((id) => counts.get(id) === 1)).toBe(true);
    // Any worker answers for any job: the files come from the shared DATA_FOLDER, whichever
    // tunnel (and so whichever worker) the relay picked for each request.
    for (const id of ids) {
      const res = await fetch(`${relayApi.base}/jobs/${id}/files/result.txt`);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe(`done ${id}\n`);
    }
    // And each worker's own API knows the other's jobs.
    const ranOnA = finals.find((f) => f.worker === 'host-a')!.id as string;
    expect((await b.api.job(ranOnA)).state).toBe('succeeded');
  });

  it('cancels a job running on worker A through worker B’s API', async () => {
    const running = await until('a job running on host-a', async () => {
      const id = await a.api.submit('once', {});
      const rec = await a.api.waitFor(id, ['running'], 30_000);
      if (rec.worker === 'host-a') return id;
      await b.api.call('DELETE', `/jobs/${id}`);
      return undefined;
    });
    const del = await b.api.call('DELETE', `/jobs/${running}`);
    expect(del.status).toBeLessThan(300);
    const rec = await a.api.waitFor(running, ['cancelled', 'failed', 'succeeded'], 30_000);
    expect(rec.state).toBe('cancelled');
    expect(rec.worker).toBe('host-a');
  });

  it('finishes on B the jobs of worker A after A is SIGKILLed', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push(await relayApi.submit('sleepy', {}));
    const onA = await until('jobs running on both workers', async () => {
      const recs = await Promise.all(ids.map((id) => b.api.job(id)));
      const running = recs.filter((r) => r.state === 'running');
      const mine = running.filter((r) => r.worker === 'host-a').map((r) => r.id as string);
      return mine.length > 0 && running.length > mine.length ? mine : undefined;
    });
    await a.proc!.stop('SIGKILL');
    const finals = await Promise.all(
      ids.map((id) => b.api.waitFor(id, ['succeeded', 'failed', 'cancelled'], 150_000)),
    );
    expect(finals.map((f) => f.state)).toEqual(ids.map(() => 'succeeded'));
    for (const id of onA) {
      const rec = finals.find((f) => f.id === id)!;
      expect(rec.worker).toBe('host-b');
      expect(rec.attempts).toBeGreaterThanOrEqual(2);
    }
    const counts = ranCounts();
    // A's job processes died with A (its spawn helper kills them), so each job completed once.
    expect(ids.map((id) => counts.get(id))).toEqual(ids.map(() => 1));
    await a.start(); // back for the next test
  });

  it('drains B on SIGUSR2: its running jobs finish there, new jobs go to A, then B exits 0', async () => {
    const first: string[] = [];
    for (let i = 0; i < 8; i++) first.push(await relayApi.submit('sleepy', {}));
    const onB = await until('jobs running on B', async () => {
      const recs = await Promise.all(first.map((id) => a.api.job(id)));
      const mine = recs.filter((r) => r.state === 'running' && r.worker === 'host-b');
      return mine.length > 0 ? mine.map((r) => r.id as string) : undefined;
    });
    const exited = new Promise<number | null>((resolve) =>
      b.proc!.child.once('exit', (code) => resolve(code)),
    );
    b.proc!.child.kill('SIGUSR2');
    await b.proc!.waitForLog('draining', 10_000);
    const later: string[] = [];
    for (let i = 0; i < 6; i++) later.push(await a.api.submit('work', {}));
    const finals = await Promise.all(
      [...first, ...later].map((id) => a.api.waitFor(id, ['succeeded', 'failed'], 120_000)),
    );
    expect(finals.map((f) => f.state)).toEqual(finals.map(() => 'succeeded'));
    // B's running jobs ended on B, with their first attempt: nothing was handed back.
    for (const id of onB) {
      const rec = finals.find((f) => f.id === id)!;
      expect(rec.worker).toBe('host-b');
      expect(rec.attempts).toBe(1);
    }
    // Nothing new started on B once it was draining.
    for (const id of later) expect(finals.find((f) => f.id === id)!.worker).toBe('host-a');
    expect(await exited).toBe(0);
    expect(b.proc!.stdout() + b.proc!.stderr()).toContain('drained: no job running');
  });
});
