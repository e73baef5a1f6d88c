import { connect, createServer } from 'node:net';
import { ephemeralLow, freePort } from '../support/ports';

describe('freePort (test support)', () => {
  it('hands out distinct ports below the ephemeral range that a daemon can bind on any address', async () => {
    const ports: number[] = [];
    for (let i = 0; i < 20; i++) ports.push(await freePort());
    expect(new Set(ports).size).toBe(ports.length);
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(10_000);
      expect(port).toBeLessThan(ephemeralLow());
    }
    const srv = createServer();
    await new Promise<void>((resolve) => srv.listen(ports[0], '0.0.0.0', resolve));
    srv.close();
  });

  it('skips a port something already listens on', async () => {
    // Take the next port this process would be handed, then ask again: it must not come back.
    const held = createServer();
    const port = await freePort();
    await new Promise<void>((resolve) => held.listen(port + 1, '127.0.0.1', resolve));
    try {
      const next = await freePort();
      expect(next).not.toBe(port + 1);
      const reached = await new Promise<boolean>((resolve) => {
        const s = connect(next, '127.0.0.1');
        s.once('connect', () => (s.destroy(), resolve(true)));
        s.once('error', () => resolve(false));
      });
      expect(reached).toBe(false); // nothing listens on the port handed out
    } finally {
      held.close();
    }
  });
});
