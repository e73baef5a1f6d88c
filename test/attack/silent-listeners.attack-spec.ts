import { get } from 'node:http';
import { startPair, type Pair } from '../support/system';
import { fds, getTest, sleep, startFlood } from './peers';
import { ATTACK_SCALE, recordAttack, timed } from './support';

jest.setTimeout(ATTACK_SCALE.full ? 300_000 : 120_000);

const FLOOD = 3_000;
const SECONDS = ATTACK_SCALE.full ? 30 : 6;

/** GET `path` on a new connection to `port`: true on 200 within 5 s. */
function getOk(port: number, path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false, timeout: 5_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/**
 * Silent TCP connections to the daemons' plain HTTP listeners, which Node's HTTP server
 * neither times out (its headersTimeout starts at the first byte) nor caps: the relay's
 * ADMIN_LISTEN and the worker's API_LISTEN, against the built daemons. Each listener now closes
 * a connection that has sent no request head within 10 s and holds at most `maxWaiting` such
 * connections (the oldest of the busiest address goes past it), within a cap of connections
 * (README, "Relay connections" and "Job API").
 */
describe(`silent connections to ADMIN_LISTEN and API_LISTEN (${ATTACK_SCALE.name})`, () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await startPair();
  });
  afterAll(async () => {
    await pair?.stop();
  });

  async function flood(
    name: string,
    what: string,
    port: number,
    pid: number,
    maxWaiting: number,
    legitOne: () => Promise<boolean>,
  ) {
    const base = fds(pid);
    const attack = startFlood('silent', port, '127.0.0.2', FLOOD);
    await sleep(1_000);
    const legit: { ok: boolean; ms: number }[] = [];
    let fdsMax = 0;
    const until = performance.now() + SECONDS * 1000;
    while (performance.now() < until) {
      legit.push(await timed(legitOne));
      legit.push(await timed(() => getTest(pair.ports.relay, 5_000)));
      fdsMax = Math.max(fdsMax, fds(pid));
      await sleep(100);
    }
    const counts = await attack.stop();
    // The listener's bound: `maxWaiting` silent connections (twice that within one turn, the
    // Admission's hard cap), and the daemon's own few.
    const bound = base + 2 * maxWaiting + 64;
    const failed = legit.filter((l) => !l.ok).length;
    recordAttack(name, {
      attack: `${FLOOD} TCP connections to ${what} that never send a byte, from 127.0.0.2, each re-opened at once when closed, for ${SECONDS} s; the legitimate client alternates a request there and GET /test through the relay`,
      times: counts.opened,
      gotThrough: failed + (fdsMax > bound ? 1 : 0),
      counted: `legitimate requests that failed, and a daemon holding more descriptors than its bound (${maxWaiting} waiting)`,
      legit: {
        tried: legit.length,
        ok: legit.length - failed,
        latenciesMs: legit.map((l) => l.ms),
      },
      extra: { closedByDaemon: counts.closedByPeer, fds: { before: base, max: fdsMax, bound } },
    });
    expect(legit.length).toBeGreaterThan(10);
    expect(failed).toBe(0);
    expect(counts.closedByPeer).toBeGreaterThan(0);
    expect(fdsMax).toBeLessThanOrEqual(bound);
  }

  it.each([
    [
      'relay-admin-silent-connections',
      "the relay's ADMIN_LISTEN",
      'admin',
      'relay',
      256,
      '/healthz',
    ],
    ['api-silent-connections', "the worker's API_LISTEN", 'api', 'worker', 1024, '/test'],
  ] as const)(
    '%s: silent connections to %s are closed and bounded; it and /test through the relay answer',
    async (name, what, port, daemon, maxWaiting, path) => {
      await flood(name, what, pair.ports[port], pair[daemon].child.pid!, maxWaiting, () =>
        getOk(pair.ports[port], path),
      );
    },
  );
});
