import fc from 'fast-check';
import { parseRedisUrl } from '../../../config/src';
import { redactRedisUrl, redisStartError } from './redis-check';

describe('redactRedisUrl', () => {
  it('hides the password and the sentinels’ password, keeping the rest', () => {
    expect(redactRedisUrl('redis://:s3cret@db:6379/2')).toBe('redis://:***@db:6379/2');
    expect(redactRedisUrl('rediss://ada:pa:ss@db/0')).toBe('rediss://ada:***@db/0');
    expect(redactRedisUrl('redis://ada@db')).toBe('redis://ada@db');
    expect(redactRedisUrl('redis://db:6379')).toBe('redis://db:6379');
    expect(
      redactRedisUrl('redis+sentinel://u:p%40w@s1:26379,s2/gsc/1?tls=1&sentinelPassword=x&y=2'),
    ).toBe('redis+sentinel://u:***@s1:26379,s2/gsc/1?tls=1&sentinelPassword=***&y=2');
    expect(redactRedisUrl(' redis-sentinel://s1/gsc?sentinelPassword=top ')).toBe(
      'redis-sentinel://s1/gsc?sentinelPassword=***',
    );
  });

  it('never prints a password that parseRedisUrl would use, whatever it holds', () => {
    // Passwords as a URL may carry them: anything but '@' and '/' (which end the user info),
    // percent-escapes included. What parseRedisUrl reads as the password must not survive.
    const chars = fc.constantFrom(...'abcXYZ019:;!$&()*+,=._~-%#?'.split(''));
    fc.assert(
      fc.property(
        fc.stringOf(chars, { minLength: 6, maxLength: 30 }),
        fc.stringOf(fc.constantFrom(...'abcxyz'.split('')), { maxLength: 5 }),
        (password, user) => {
          const url = `redis://${user}:${password}@db.lab:6379/3`;
          let parsed;
          try {
            parsed = parseRedisUrl(url);
          } catch {
            return; // not a REDIS_URL the worker would start with
          }
          const shown = redactRedisUrl(url);
          expect(shown).toBe(`redis://${user}:***@db.lab:6379/3`);
          if (parsed.password) expect(shown).not.toContain(parsed.password);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('redisStartError', () => {
  it('says where, the cause, and what to do', () => {
    expect(redisStartError('redis://db:6379', 'connect ECONNREFUSED 10.0.0.1:6379').message).toBe(
      'cannot use Redis at redis://db:6379: connect ECONNREFUSED 10.0.0.1:6379 (is redis-server running there, on that port?)',
    );
    expect(redisStartError('redis://db', 'NOAUTH Authentication required.').message).toContain(
      'the server needs a password: REDIS_URL=redis://[user]:PASSWORD@host:port',
    );
    expect(redisStartError('redis://db', 'something new').message).toBe(
      'cannot use Redis at redis://db: something new',
    );
  });
});
