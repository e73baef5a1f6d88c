import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exitCode, runCli } from '../support/daemon';
import { freePort } from '../support/ports';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, workerEnvIn } from '../support/system';

jest.setTimeout(120_000);

/**
 * A worker whose Redis is wrong, as a person meets it: the worker stops at start naming the URL
 * (password hidden) and the cause, never "Connection is closed." or a silent fall back to
 * database 0 (test/e2e/redis-down.e2e-spec.ts: Redis going away later).
 */
const PASSWORD = 'pw-Zq8t!';

describe('a worker that cannot use its Redis', () => {
  let redis: TestRedis;
  let dir: string;
  let keyFile: string;
  const acl = (...args: string[]) =>
    spawnSync('redis-cli', ['-p', String(redis.port), 'ACL', 'SETUSER', ...args], {
      encoding: 'utf8',
    }).stdout.trim();

  beforeAll(async () => {
    redis = await startRedis();
    // A user with a password; `default` stays open for the test helpers (redis-cli ping).
    expect(acl('ada', 'on', `>${PASSWORD}`, '~*', '&*', '+@all')).toBe('OK');
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-redis-trouble-'));
    keyFile = keygen(dir);
  });

  afterAll(() => {
    redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Starts a worker with this REDIS_URL and waits for it to stop; its exit code and output. */
  async function failedStart(redisUrl: string | undefined, dataFolder?: string) {
    const { env } = await workerEnvIn(dir, keyFile, {
      ...(redisUrl === undefined ? {} : { redisUrl }),
      ...(dataFolder
        ? { folders: { data: dataFolder, experiments: path.join(dir, 'no-experiments') } }
        : {}),
    });
    mkdirSync(path.join(dir, 'no-experiments'), { recursive: true });
    const w = runCli(['worker'], env);
    const code = await exitCode(w, 60_000);
    return { code, out: w.stdout() + w.stderr() };
  }

  it('stops at start naming the URL (password hidden) and the cause: unreachable, wrong password, database out of range, no sentinel', async () => {
    const closed = await freePort();
    const cases: [string, string][] = [
      [
        `redis://ada:${PASSWORD}@127.0.0.1:${closed}/0`,
        `cannot use Redis at redis://ada:***@127.0.0.1:${closed}/0: connect ECONNREFUSED 127.0.0.1:${closed} (is redis-server running there, on that port?)`,
      ],
      [
        `redis://ada:wrong-${PASSWORD}@127.0.0.1:${redis.port}`,
        `cannot use Redis at redis://ada:***@127.0.0.1:${redis.port}: WRONGPASS invalid username-password pair or user is disabled. (the user or password in REDIS_URL is wrong)`,
      ],
      [
        `redis://ada:${PASSWORD}@127.0.0.1:${redis.port}/99`,
        `cannot use Redis at redis://ada:***@127.0.0.1:${redis.port}/99: database 99: ERR DB index is out of range (the server has 16 databases, 0 to 15)`,
      ],
      [
        `redis+sentinel://127.0.0.1:${closed}/gsc?sentinelPassword=${PASSWORD}`,
        `cannot use Redis at redis+sentinel://127.0.0.1:${closed}/gsc?sentinelPassword=***: no sentinel named the master: sentinel 127.0.0.1:${closed}: connect ECONNREFUSED 127.0.0.1:${closed}`,
      ],
      [
        // A Redis that is not a sentinel, asked as one.
        `redis+sentinel://127.0.0.1:${redis.port}/gsc`,
        `cannot use Redis at redis+sentinel://127.0.0.1:${redis.port}/gsc: no sentinel named the master: sentinel 127.0.0.1:${redis.port}: ERR unknown command`,
      ],
    ];
    const runs = await Promise.all(cases.map(([url]) => failedStart(url)));
    for (const [i, r] of runs.entries()) {
      expect({ url: cases[i][0], code: r.code }).toEqual({ url: cases[i][0], code: 1 });
      expect(r.out).toContain(cases[i][1]);
      expect(r.out).not.toContain(PASSWORD);
      expect(r.out).not.toContain('Connection is closed.');
    }
  });

  it('stops at start when the embedded redis-server cannot start, with the cause from its log', async () => {
    const data = path.join(dir, 'bad-aof');
    mkdirSync(path.join(data, 'redis', 'appendonlydir'), { recursive: true });
    writeFileSync(
      path.join(data, 'redis', 'appendonlydir', 'appendonly.aof.manifest'),
      'not a manifest\n',
    );
    const r = await failedStart(undefined, data);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/embedded redis-server \(.*bad-aof\/redis\) exited \(1\) at start: /);
    expect(r.out).toContain('Invalid AOF manifest file format');
    expect(r.out).toContain(path.join(data, 'redis', 'redis.log'));
  });
});
