import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { freePort } from '../support/ports';
import { startPair, waitUntil, type Pair } from '../support/system';

jest.setTimeout(120_000);

/**
 * Sends `data`, half-closes, and resolves with everything the peer sent until its end. A
 * refused stream closes the connection, cleanly or with a reset (if our bytes were still
 * unread): both resolve, with what came before.
 */
function exchange(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('end', () => resolve(Buffer.concat(got)));
    s.on('close', () => resolve(Buffer.concat(got)));
    s.on('error', (err: NodeJS.ErrnoException) =>
      err.code === 'ECONNRESET' ? resolve(Buffer.concat(got)) : reject(err),
    );
    s.write(data, () => s.end());
  });
}

/** RELAY_FORWARDS on the relay reaches TUNNEL_TARGETS on the worker, by name only. */
describe('relay forwards to named worker targets', () => {
  let pair: Pair;
  let echo: Server;
  let echoed = 0;
  const ports = { echo: 0, unknown: 0 };

  beforeAll(async () => {
    echo = createServer({ allowHalfOpen: true }, (s) => {
      echoed++;
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    ports.echo = await freePort();
    ports.unknown = await freePort();
    pair = await startPair({
      worker: { TUNNEL_TARGETS: `echo=127.0.0.1:${(echo.address() as AddressInfo).port}` },
      relay: {
        RELAY_FORWARDS: `echo=127.0.0.1:${ports.echo},nope=127.0.0.1:${ports.unknown}`,
      },
    });
  });
  afterAll(async () => {
    await pair?.stop();
    echo?.close();
  });

  it('carries a connection on a forward port to the worker target of that name', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const back = await exchange(ports.echo, data);
    expect(createHash('sha256').update(back).digest('hex')).toBe(
      createHash('sha256').update(data).digest('hex'),
    );
  });

  it('closes a connection whose target the worker does not expose, and says why', async () => {
    const before = echoed;
    const back = await exchange(ports.unknown, Buffer.from('hello'));
    expect(back.length).toBe(0);
    expect(echoed).toBe(before);
    // The worker's log line and the relay's close travel by different pipes, so the line may
    // reach us after the close does: wait for it rather than read stderr once.
    const refused = await waitUntil('the worker logs the refused stream', () =>
      pair.worker
        .stderr()
        .split('\n')
        .find((line) => line.includes('tunnel stream refused') && line.includes('"target":"nope"')),
    );
    expect(refused).toContain('unknown target');
  });

  it('still relays RELAY_LISTEN to the API', async () => {
    const res = await fetch(`http://127.0.0.1:${pair.ports.relay}/test`);
    expect(await res.json()).toEqual({ response: 'ok' });
  });

  it('logs no exposure warning for listeners on loopback', () => {
    expect(pair.relay.stderr()).toContain('relay ready');
    expect(pair.relay.stderr()).not.toContain('not on loopback');
  });
});
