import { parseRedisInfo, probeRedis, type RedisProbeClient } from './redis';

const client = (over: Partial<RedisProbeClient> = {}): RedisProbeClient => ({
  ping: async () => 'PONG',
  info: async (section) =>
    section === 'memory'
      ? '# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n'
      : '# Persistence\r\naof_enabled:1\r\n',
  config: async () => ['maxmemory-policy', 'noeviction'],
  ...over,
});

describe('probeRedis', () => {
  it('parses INFO', () => {
    expect(parseRedisInfo('# Memory\r\nused_memory:12\r\nx:a:b\r\n')).toEqual(
      new Map([
        ['used_memory', '12'],
        ['x', 'a:b'],
      ]),
    );
  });

  it('is healthy with noeviction and AOF', async () => {
    expect(await probeRedis(client())).toMatchObject({
      up: true,
      healthy: true,
      usedMemoryBytes: 1048576,
      maxmemoryPolicy: 'noeviction',
      aofEnabled: true,
      problems: [],
    });
  });

  it('is down when PING fails or hangs', async () => {
    const down = await probeRedis(
      client({ ping: () => Promise.reject(new Error('ECONNREFUSED')) }),
    );
    expect(down).toEqual({ up: false, healthy: false, problems: ['Redis is down: ECONNREFUSED'] });
    const hung = await probeRedis(client({ ping: () => new Promise(() => undefined) }), 20);
    expect(hung.problems).toEqual(['Redis is down: PING got no answer within 20 ms']);
  });
});
