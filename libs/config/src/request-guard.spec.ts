import { HostPolicy } from './request-guard';

const policy = (apiHost = '127.0.0.1', apiHosts: string[] = []) =>
  new HostPolicy(apiHost, apiHosts);

describe('HostPolicy.allowsHost', () => {
  it.each([
    'localhost',
    'localhost:8001',
    'LOCALHOST.:3000',
    '127.0.0.1',
    '127.0.0.1:8000',
    '127.1.2.3:1',
    '[::1]:8001',
    '[::ffff:127.0.0.1]:80',
  ])('accepts the loopback name %s with any port', (host) =>
    expect(policy().allowsHost(host)).toBe(true),
  );

  it("accepts API_LISTEN's host and API_HOSTS names, any port, any case", () => {
    const p = policy('10.0.0.5', ['front.example.org', 'gpu1', 'fd00::7']);
    for (const host of [
      '10.0.0.5:8000',
      'Front.Example.org',
      'gpu1:443',
      'gpu1.',
      '[fd00::7]:8000',
    ])
      expect([host, p.allowsHost(host)]).toEqual([host, true]);
  });

  it.each([
    'attacker.example',
    'attacker.example:8001',
    'localhost.attacker.example',
    '127.0.0.1.attacker.example',
    'gpu1.attacker.example',
    '10.0.0.5',
    '128.0.0.1',
    '[::2]:80',
    'localhost:8001:1',
    'localhost:port',
    'local host',
    '',
    'user@localhost',
  ])('refuses %j (names nobody configured, or not a Host at all)', (host) =>
    expect(policy('127.0.0.1', ['gpu1']).allowsHost(host)).toBe(false),
  );
});

describe('HostPolicy.allowsOrigin', () => {
  const p = policy('127.0.0.1', ['front.example.org']);

  it.each([
    'http://localhost:3000',
    'http://127.0.0.1:8001',
    'https://front.example.org',
    'http://[::1]:5173',
  ])('accepts %s', (origin) => expect(p.allowsOrigin(origin)).toBe(true));

  it.each([
    'http://attacker.example',
    'https://front.example.org.attacker.example',
    'null',
    'file://',
    'chrome-extension://abcdef',
    'http://localhost, http://attacker.example',
    '',
  ])('refuses %j', (origin) => expect(p.allowsOrigin(origin)).toBe(false));
});
