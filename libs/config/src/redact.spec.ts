import fc from 'fast-check';
import { parseRedisUrl } from './parse';
import { redactUrl } from './redact';

describe('redactUrl', () => {
  it.each([
    ['redis://user:s3cret@redis:6379/0', 'redis://user:***@redis:6379/0'],
    ['redis://:s3cret@[::1]', 'redis://:***@[::1]'],
    ['https://TOKEN123@git.example.org/x', 'https://***@git.example.org/x'],
    // A raw `@` or `:` in the password: everything up to the last `@` of the authority is hidden.
    ['redis://app:p@ss:w@rd@redis:6379', 'redis://app:***@redis:6379'],
    [
      'redis+sentinel://:pw@s1:26379,s2:26379/gsc/1?sentinelPassword=sp&tls=1',
      'redis+sentinel://:***@s1:26379,s2:26379/gsc/1?sentinelPassword=***&tls=1',
    ],
    [
      'wss://front.example.org/tunnel?token=abc&x=1',
      'wss://front.example.org/tunnel?token=***&x=1',
    ],
    ['http://h/p?api_key=1;auth=2&page=3', 'http://h/p?api_key=***;auth=***&page=3'],
    [
      'http://h/p?Password=1&PASS=2&secret=3&sig=4',
      'http://h/p?Password=***&PASS=***&secret=***&sig=***',
    ],
    ['http://h/p?a%70ikey=1', 'http://h/p?a%70ikey=***'],
  ])('%s becomes %s', (url, shown) => expect(redactUrl(url)).toBe(shown));

  it.each([
    'ws://127.0.0.1:8080/',
    'redis://redis:6379/2?tls=1',
    'http://h/p#password=notaquery',
    'not a url at all',
    '',
  ])('leaves %j without secrets as it is', (url) => expect(redactUrl(url)).toBe(url));

  it('never lets a password or a secret parameter through, whatever the text around it', () => {
    // No `@`, `/`, `?`, `#`, `&`, `;`, `=` in the secret: those would end it in a real URL.
    const secret = fc
      .stringMatching(/^[A-Za-z0-9%!$'()*+,:~.-]{6,30}$/)
      .filter((s) => !/^[.]+$/.test(s));
    const name = fc.constantFrom('password', 'sentinelPassword', 'token', 'access_token', 'key');
    fc.assert(
      fc.property(fc.webUrl(), secret, secret, name, (url, user, pass, param) => {
        const u = new URL(url);
        const withUser = `${u.protocol}//${user}:${pass}@${u.host}${u.pathname}?${param}=${pass}`;
        const shown = redactUrl(withUser);
        return !shown.includes(`:${pass}@`) && !shown.includes(`=${pass}`);
      }),
    );
  });
});

describe('redactUrl on REDIS_URL', () => {
  it('hides the password and the sentinels’ password, keeping the rest', () => {
    expect(redactUrl('redis://:s3cret@db:6379/2')).toBe('redis://:***@db:6379/2');
    expect(redactUrl('rediss://ada:pa:ss@db/0')).toBe('rediss://ada:***@db/0');
    expect(redactUrl('redis://ada@db')).toBe('redis://***@db'); // a lone user@ may be a token
    expect(redactUrl('redis://db:6379')).toBe('redis://db:6379');
    expect(
      redactUrl('redis+sentinel://u:p%40w@s1:26379,s2/gsc/1?tls=1&sentinelPassword=x&y=2'),
    ).toBe('redis+sentinel://u:***@s1:26379,s2/gsc/1?tls=1&sentinelPassword=***&y=2');
    expect(redactUrl('redis-sentinel://s1/gsc?sentinelPassword=top')).toBe(
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
          const shown = redactUrl(url);
          expect(shown).toBe(`redis://${user}:***@db.lab:6379/3`);
          if (parsed.password) expect(shown).not.toContain(parsed.password);
        },
      ),
      { numRuns: 500 },
    );
  });
});
