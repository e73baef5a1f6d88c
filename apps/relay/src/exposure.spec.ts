import { exposureWarning, isLoopback } from './exposure';

describe('relay listeners off loopback', () => {
  it('counts 127.0.0.0/8, ::1, an IPv4-mapped 127.x and localhost as loopback', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', '::ffff:127.0.0.1', 'localhost'])
      expect([host, isLoopback(host)]).toEqual([host, true]);
  });

  it('counts wildcards, other addresses and host names as reachable from elsewhere', () => {
    for (const host of ['0.0.0.0', '::', '10.0.0.5', '::ffff:10.0.0.5', 'fe80::1', 'gpu1', ''])
      expect([host, isLoopback(host)]).toEqual([host, false]);
  });

  it('warns for a forward on a wildcard address, naming it, the address and the target', () => {
    const forward = { name: 'RELAY_FORWARDS echo', target: 'echo', host: '0.0.0.0', port: 9000 };
    expect(exposureWarning(forward)).toBe(
      'RELAY_FORWARDS echo listens on 0.0.0.0:9000, not on loopback: anyone who can reach this ' +
        "host there reaches the worker's target 'echo' through the tunnel, unauthenticated. " +
        'Bind 127.0.0.1 unless that is meant, and then firewall the port.',
    );
    expect(exposureWarning({ ...forward, host: '::' })).toMatch(
      /^RELAY_FORWARDS echo listens on \[::\]:9000/,
    );
  });

  it('says nothing for a listener on loopback', () => {
    expect(
      exposureWarning({ name: 'RELAY_LISTEN', target: 'api', host: '127.0.0.1', port: 8001 }),
    ).toBeUndefined();
  });
});
