import fc from 'fast-check';
import {
  parseDiskThreshold,
  parseDuration,
  parseGpuDevices,
  parseHostNames,
  parseHostPort,
  parseRedisUrl,
  parseSize,
  parseTunnelUrl,
  parseUidGid,
} from './parse';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['2h', 7_200_000],
    ['30d', 2_592_000_000],
    ['1.5s', 1500],
  ])('reads %s as %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(['', '5', 'five seconds', '-1s', '0s', '3w'])('refuses %j with the accepted forms', (t) =>
    expect(() => parseDuration(t)).toThrow(/duration like 500ms|more than zero/),
  );
});

describe('parseHostPort', () => {
  it('reads IPv4, names, IPv6 in brackets and a bare port', () => {
    expect(parseHostPort('127.0.0.1:8000')).toEqual({ host: '127.0.0.1', port: 8000 });
    expect(parseHostPort('gpu-1.lab:80')).toEqual({ host: 'gpu-1.lab', port: 80 });
    expect(parseHostPort('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(parseHostPort(':8080')).toEqual({ host: '0.0.0.0', port: 8080 });
  });

  it('refuses anything else without throwing something other than an Error', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        try {
          const hp = parseHostPort(s);
          return hp.port >= 0 && hp.port <= 65535 && hp.host.length > 0;
        } catch (err) {
          return err instanceof Error && /host:port|port must be/.test(err.message);
        }
      }),
    );
    expect(() => parseHostPort('127.0.0.1:70000')).toThrow('port must be 0-65535');
  });
});

describe('other formats', () => {
  it('reads GPU selections', () => {
    expect(parseGpuDevices('all')).toEqual({ kind: 'all' });
    expect(parseGpuDevices('NONE')).toEqual({ kind: 'none' });
    expect(parseGpuDevices('1, 3')).toEqual({ kind: 'list', ids: ['1', '3'] });
    expect(() => parseGpuDevices('gpu0')).toThrow(/indexes\/UUIDs/);
  });

  it('reads uid[:gid] and disk thresholds', () => {
    expect(parseUidGid('1000')).toEqual({ uid: 1000, gid: undefined });
    expect(() => parseUidGid('demo')).toThrow(/numeric uid/);
    expect(parseDiskThreshold('5%')).toEqual({ percent: 5 });
    expect(parseDiskThreshold('2GiB')).toEqual({ bytes: 2 * 1024 ** 3 });
    expect(() => parseDiskThreshold('100%')).toThrow(/below 100/);
    expect(() => parseDiskThreshold('lots')).toThrow(/percentage like 5%/);
  });
});

describe('parseRedisUrl', () => {
  it('reads a single server with credentials, db and TLS', () => {
    expect(parseRedisUrl('rediss://app:p%40ss@redis.lab:6380/2')).toEqual({
      kind: 'direct',
      host: 'redis.lab',
      port: 6380,
      username: 'app',
      password: 'p@ss',
      db: 2,
      tls: true,
    });
    expect(parseRedisUrl('redis://:secret@[::1]')).toMatchObject({
      host: '::1',
      port: 6379,
      password: 'secret',
      username: undefined,
      db: 0,
      tls: false,
    });
  });

  it('reads a Sentinel list with the master name, db and sentinel password', () => {
    expect(
      parseRedisUrl(
        'redis+sentinel://:pw@s1:26379,s2,10.0.0.3:26380/mymaster/1?sentinelPassword=sp',
      ),
    ).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26379 },
        { host: '10.0.0.3', port: 26380 },
      ],
      name: 'mymaster',
      username: undefined,
      password: 'pw',
      sentinelPassword: 'sp',
      db: 1,
      tls: false,
    });
    expect(parseRedisUrl('redis-sentinel://s1/m')).toMatchObject({ kind: 'sentinel', name: 'm' });
  });

  it.each([
    ['http://redis:6379', 'expected redis://'],
    ['redis://a:1,b:2', 'several hosts need redis+sentinel://'],
    ['redis://host:99999', "bad host:port 'host:99999'"],
    ['redis://host/abc', "database must be a number 0-99, got 'abc'"],
    ['redis+sentinel://s1:26379', 'give the master name as the path'],
    ['redis+sentinel:///m', 'no sentinel host given'],
  ])('refuses %s, saying %s and the accepted forms', (url, msg) => {
    expect(() => parseRedisUrl(url)).toThrow(msg);
    expect(() => parseRedisUrl(url)).toThrow('redis+sentinel://[user:password@]host:port');
  });
});

describe('parseSize', () => {
  it.each([
    ['1GiB', 1024 ** 3],
    ['500MB', 500e6],
    ['1048576', 1048576],
    ['1.5 kb', 1500],
  ])('reads %s as %d bytes', (text, bytes) => expect(parseSize(text)).toBe(bytes));

  it.each(['', 'lots', '5%', '-1MB', '0', '10 parsecs'])(
    'refuses %j with the accepted forms',
    (t) => expect(() => parseSize(t)).toThrow(/a size like 1GiB|at least 1 byte/),
  );
});

describe('parseHostNames', () => {
  it('reads names and addresses, lower-cased, without a final dot or brackets', () => {
    expect(parseHostNames('Front.Example.org., gpu1, 10.0.0.7, [fd00::7], ::1')).toEqual([
      'front.example.org',
      'gpu1',
      '10.0.0.7',
      'fd00::7',
      '::1',
    ]);
    expect(parseHostNames('')).toEqual([]);
  });

  it.each(['http://front.example.org', 'front.example.org:443', '*.example.org', 'a b', 'x/y'])(
    'refuses %j, asking for names without scheme or port',
    (t) =>
      expect(() => parseHostNames(t)).toThrow(/without scheme or port, like front\.example\.org/),
  );
});

describe('URLs quoted back in errors', () => {
  it('never repeat a password', () => {
    for (const bad of ['redis://u:s3cret@host:1/x/y/z#', 'http://u:s3cret@redis:6379']) {
      expect(() => parseRedisUrl(bad)).toThrow();
      try {
        parseRedisUrl(bad);
      } catch (err) {
        expect((err as Error).message).not.toContain('s3cret');
      }
    }
    expect(() => parseTunnelUrl('http://u:s3cret@gpu1:8080')).toThrow(
      /got 'http:\/\/u:\*\*\*@gpu1:8080'/,
    );
  });
});
