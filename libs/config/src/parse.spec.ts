import fc from 'fast-check';
import {
  parseDiskThreshold,
  parseDuration,
  parseGpuDevices,
  parseHostPort,
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
