import { connect, createServer } from 'node:net';
import { ephemeralLow, FETCH_BAD_PORTS, freePort } from '../support/ports';

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

  it('never hands out a port fetch() refuses to call (10080 lies in the first block)', async () => {
    // The first worker's block (10,000-11,999), whatever worker runs this file: a fresh copy of
    // the module, loaded as Jest worker 1.
    const saved = {
      id: process.env.JEST_WORKER_ID,
      shift: process.env.GPU_SIDECAR_TEST_PORT_BLOCK,
    };
    let first!: typeof import('../support/ports');
    process.env.JEST_WORKER_ID = '1';
    delete process.env.GPU_SIDECAR_TEST_PORT_BLOCK;
    jest.isolateModules(() => {
      first = jest.requireActual('../support/ports');
    });
    process.env.JEST_WORKER_ID = saved.id;
    if (saved.shift !== undefined) process.env.GPU_SIDECAR_TEST_PORT_BLOCK = saved.shift;
    // A whole block's worth: the cursor goes round the block once, past 10080.
    const ports: number[] = [];
    for (let i = 0; i < 2_000; i++) ports.push(await first.freePort());
    expect(Math.min(...ports)).toBeLessThan(10_080);
    expect(Math.max(...ports)).toBeGreaterThan(10_080);
    expect(ports.filter((p) => FETCH_BAD_PORTS.has(p))).toEqual([]);
    const refused = await fetch('http://127.0.0.1:10080/').then(
      () => undefined,
      (err: Error & { cause?: Error }) => err.cause?.message,
    );
    expect(refused).toBe('bad port'); // the list still matches what fetch() refuses
  });
});
