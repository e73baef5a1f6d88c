import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JobsClient, writeTestExperiments } from '../../libs/jobs/src/testing/client';
import { runCli, type DaemonProcess } from '../support/daemon';
import { freePort } from '../support/ports';
import { redisServerArgs, startRedis, type TestRedis } from '../support/redis';
import { keygen, workerEnvIn } from '../support/system';

jest.setTimeout(120_000);

/**
 * REDIS_URL=redis+sentinel://…: the worker finds the master through a real Redis Sentinel, runs
 * jobs, and keeps running them after Sentinel fails the master over to its replica.
 */
const cli = (port: number, ...args: string[]) =>
  spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim();

async function until(what: string, check: () => boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('worker on Redis Sentinel', () => {
  let master: TestRedis;
  let replicaPort: number;
  let sentinelPort: number;
  let dir: string;
  let sentinel: ChildProcess;
  let worker: DaemonProcess | undefined;

  beforeAll(async () => {
    master = await startRedis();
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-sentinel-'));
    replicaPort = await freePort();
    const replicaOf = ['--replicaof', '127.0.0.1', String(master.port)];
    execFileSync('redis-server', redisServerArgs(replicaPort, dir, 'replica', replicaOf));
    await until('the replica to sync', () =>
      cli(replicaPort, 'info', 'replication').includes('master_link_status:up'),
    );
    sentinelPort = await freePort();
    const conf = path.join(dir, 'sentinel.conf');
    writeFileSync(
      conf,
      [
        `port ${sentinelPort}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor gsc 127.0.0.1 ${master.port} 1`,
        'sentinel down-after-milliseconds gsc 2000',
        'sentinel failover-timeout gsc 10000',
        '',
      ].join('\n'),
    );
    sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
    await until('the sentinel to know the master', () =>
      cli(sentinelPort, 'sentinel', 'get-master-addr-by-name', 'gsc').includes(String(master.port)),
    );
  });

  afterAll(async () => {
    await worker?.stop('SIGTERM');
    sentinel?.kill('SIGKILL');
    try {
      process.kill(Number(readFileSync(path.join(dir, 'replica.pid'), 'utf8')), 'SIGKILL');
    } catch {
      /* gone */
    }
    master?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs jobs through the master Sentinel names, before and after the master dies', async () => {
    const experiments = path.join(dir, 'experiments');
    mkdirSync(experiments);
    writeTestExperiments(experiments);
    const w = await workerEnvIn(dir, keygen(dir), {
      folders: { data: path.join(dir, 'data'), experiments },
      name: 'sentinel-worker',
      redisUrl: `redis+sentinel://127.0.0.1:${sentinelPort}/gsc`,
    });
    worker = runCli(['worker'], w.env);
    await worker.waitForLog('worker ready', 30_000);
    // Where its Redis is, as REDIS_URL says (a password would show as ***).
    expect(worker.stdout() + worker.stderr()).toContain(
      `"redis":"redis+sentinel://127.0.0.1:${sentinelPort}/gsc"`,
    );
    const api = new JobsClient(`http://127.0.0.1:${w.api}`);

    const before = await api.submit('hello', { name: 'sentinel' });
    expect((await api.waitFor(before, ['succeeded', 'failed'])).state).toBe('succeeded');
    // The job's record lives on the master Sentinel named.
    expect(cli(master.port, 'exists', `gsc:job:${before}`)).toBe('1');

    // The master dies; Sentinel promotes the replica after down-after-milliseconds.
    master.kill();
    await until('the replica to become master', () =>
      cli(sentinelPort, 'sentinel', 'get-master-addr-by-name', 'gsc').includes(String(replicaPort)),
    );
    await until('the new master to accept writes', () =>
      cli(replicaPort, 'info', 'replication').includes('role:master'),
    );

    // The API and the queue follow the new master: submit, run and finish there.
    let after: string | undefined;
    const deadline = Date.now() + 30_000;
    while (!after) {
      try {
        after = await api.submit('hello', { name: 'after failover' });
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    expect((await api.waitFor(after, ['succeeded', 'failed'], 60_000)).state).toBe('succeeded');
    expect(cli(replicaPort, 'exists', `gsc:job:${after}`)).toBe('1');
    // The job from before the failover is still there, read from the new master.
    expect((await api.job(before)).state).toBe('succeeded');
  });
});
