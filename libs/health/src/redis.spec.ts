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
    expect(down).toEqual({
      up: false,
      healthy: false,
      error: 'ECONNREFUSED',
      problems: ['Redis is down: ECONNREFUSED'],
    });
    const hung = await probeRedis(client({ ping: () => new Promise(() => undefined) }), 20);
    expect(hung.problems).toEqual(['Redis is down: PING got no answer within 20 ms']);
  });

  it('names where Redis is, and reports a client that is not connected at once with its last error', async () => {
    const ping = jest.fn(async () => 'PONG');
    const s = await probeRedis(
      { ...client({ ping }), status: 'reconnecting' },
      { url: 'redis://:***@db.lab:6379/3', lastError: () => 'connect ECONNREFUSED 10.1.1.1:6379' },
    );
    expect(s).toEqual({
      up: false,
      healthy: false,
      url: 'redis://:***@db.lab:6379/3',
      error: 'connect ECONNREFUSED 10.1.1.1:6379',
      problems: ['Redis at redis://:***@db.lab:6379/3 is down: connect ECONNREFUSED 10.1.1.1:6379'],
    });
    expect(ping).not.toHaveBeenCalled();
    const closed = await probeRedis({ ...client({ ping }), status: 'end' });
    expect(closed.problems).toEqual(['Redis is down: not connected (end)']);
    expect(ping).not.toHaveBeenCalled();
    // A first connection under way is waited for (within the budget): doctor's fresh client.
    const first = await probeRedis({ ...client({ ping }), status: 'connecting' });
    expect(first.up).toBe(true);
    expect(ping).toHaveBeenCalledTimes(1);
  });

  it('keeps INFO and CONFIG within what PING left of the budget', async () => {
    const slowPing = () => new Promise<string>((r) => setTimeout(() => r('PONG'), 30));
    const hung = () => new Promise<string>(() => undefined);
    const s = await probeRedis(client({ ping: slowPing, info: hung }), 1000);
    expect(s.up).toBe(true);
    // 1000 ms in all: what is left after a PING of 30 ms or more, never a fresh 1000.
    expect(s.problems[0]).toMatch(
      /^could not read Redis settings: INFO\/CONFIG got no answer within \d{1,3} ms$/,
    );
  });
});
