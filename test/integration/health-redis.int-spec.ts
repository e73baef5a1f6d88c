import Redis from 'ioredis';
import { probeRedis } from '../../libs/health/src';
import { startRedis, type TestRedis } from '../support/redis';

jest.setTimeout(30_000);

describe('Redis probe against a real redis-server', () => {
  let redis: TestRedis;
  let client: Redis;

  beforeAll(async () => {
    redis = await startRedis();
    client = new Redis(redis.url, {
      maxRetriesPerRequest: 1,
      retryStrategy: () => null,
      // ioredis arms this timer even when the server is already gone (the last test kills it).
      disconnectTimeout: 50,
    });
  });
  afterAll(() => {
    client.disconnect();
    redis.stop();
  });

  it('is healthy with noeviction and AOF, with latency and used memory', async () => {
    const s = await probeRedis(client);
    expect(s).toMatchObject({
      up: true,
      healthy: true,
      maxmemoryPolicy: 'noeviction',
      aofEnabled: true,
      problems: [],
    });
    expect(s.latencyMs).toBeGreaterThan(0);
    expect(s.latencyMs).toBeLessThan(1000);
    const used = /used_memory:(\d+)/.exec(await client.info('memory'))![1];
    // used_memory moves a little between two calls; same order of magnitude.
    expect(Math.abs(s.usedMemoryBytes! - Number(used))).toBeLessThan(Number(used) * 0.5);
  });

  it('is unhealthy under an evicting policy or without AOF, and says how to fix it', async () => {
    await client.config('SET', 'maxmemory-policy', 'allkeys-lru');
    await client.config('SET', 'appendonly', 'no');
    const s = await probeRedis(client);
    await client.config('SET', 'maxmemory-policy', 'noeviction');
    await client.config('SET', 'appendonly', 'yes');
    expect(s.up).toBe(true);
    expect(s.healthy).toBe(false);
    expect(s.problems).toEqual([
      'maxmemory-policy is allkeys-lru: BullMQ needs noeviction (CONFIG SET maxmemory-policy noeviction)',
      'AOF is off: queued jobs are lost on restart (CONFIG SET appendonly yes)',
    ]);
  });

  it('reports Redis down without throwing', async () => {
    redis.kill();
    const s = await probeRedis(client, 1000);
    expect(s.up).toBe(false);
    expect(s.healthy).toBe(false);
    expect(s.problems[0]).toMatch(/^Redis is down: /);
  });
});
