import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { freePort } from '../support/ports';
import { metricsText, metricValue, startPair, waitUntil, type Pair } from '../support/system';
import { fds, getTest, sleep, startFlood } from './peers';
import { ATTACK_SCALE, recordAttack, timed } from './support';

jest.setTimeout(ATTACK_SCALE.full ? 600_000 : 120_000);

/** The relay's cap of waiting connections on a server-first forward (MAX_WAITING_SERVER_FIRST). */
const SERVER_FIRST_CAP = 256;
const IDLE = 1_030;
const SECONDS = ATTACK_SCALE.full ? 30 : 8;

/**
 * One client of a forward: connects, waits for `banner` first if given, sends a line, and
 * resolves true once it got that line back (the targets echo) within 10 s.
 */
function forwardClient(port: number, banner?: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const line = `hello ${Math.random()}\n`;
    const want = (banner ?? '') + line;
    let got = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 10_000);
    s.on('error', () => done(false));
    s.on('close', () => done(got === want));
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (banner !== undefined && got === banner) s.write(line);
      if (got === want) done(true);
    });
    if (banner === undefined) s.write(line);
  });
}

/**
 * The worker's target: a TCP server on loopback in its own process (as a database would be,
 * and so that the flood's connections to it cost the test runner nothing) that counts its
 * connections; `banner` is sent first, then it echoes.
 */
async function target(
  banner?: string,
): Promise<{ port: number; accepted(): Promise<number>; stop(): void }> {
  const code = `
    const banner = process.argv[1];
    let accepted = 0;
    const server = require('node:net').createServer((s) => {
      accepted++;
      s.on('error', () => undefined);
      if (banner) s.write(banner);
      s.pipe(s);
    });
    server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
    process.on('message', () => process.send({ accepted }));
    process.on('disconnect', () => process.exit(0));
  `;
  const child = spawn(process.execPath, ['-e', code, banner ?? ''], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = () =>
    new Promise<{ port?: number; accepted?: number }>((r) => child.once('message', r as never));
  const { port } = await next();
  return {
    port: port!,
    accepted: async () => {
      const answer = next();
      child.send('count');
      return (await answer).accepted!;
    },
    stop: () => child.kill(),
  };
}

/**
 * Idle-connection floods on RELAY_FORWARDS listeners (README, "Relay connections"), against
 * the built relay and worker as processes: a forward whose client speaks first (`echo`) and one
 * listed in RELAY_FORWARDS_SERVER_FIRST (`banner`, which greets first, as MySQL or SMTP do).
 * Meanwhile a legitimate client uses the forward under attack and GET /test on RELAY_LISTEN.
 */
describe(`idle clients of the relay's RELAY_FORWARDS (${ATTACK_SCALE.name})`, () => {
  let pair: Pair;
  let echo: Awaited<ReturnType<typeof target>>;
  let banner: Awaited<ReturnType<typeof target>>;
  const ports = { echo: 0, banner: 0 };
  const BANNER = '220 gpu-sidecar test target ready\r\n';

  beforeAll(async () => {
    echo = await target();
    banner = await target(BANNER);
    ports.echo = await freePort();
    ports.banner = await freePort();
    pair = await startPair({
      worker: {
        TUNNEL_TARGETS: `echo=127.0.0.1:${echo.port},banner=127.0.0.1:${banner.port}`,
      },
      relay: {
        RELAY_FORWARDS: `echo=127.0.0.1:${ports.echo},banner=127.0.0.1:${ports.banner}`,
        RELAY_FORWARDS_SERVER_FIRST: 'banner',
      },
    });
  });
  afterAll(async () => {
    await pair?.stop();
    echo?.stop();
    banner?.stop();
  });

  /**
   * Floods `port` with IDLE silent connections from `from` for SECONDS while the legitimate
   * client alternates `legitOne` and GET /test on RELAY_LISTEN; samples the relay's open
   * streams and descriptors, and waits for the descriptors to come back after the flood.
   */
  async function underFlood(port: number, from: string, legitOne: () => Promise<boolean>) {
    const relayPid = pair.relay.child.pid!;
    const metrics = () => metricsText(`http://127.0.0.1:${pair.ports.admin}/metrics`);
    const base = fds(relayPid);
    const streamsBefore = metricValue(await metrics(), 'tunnel_streams_total') ?? 0;
    const flood = startFlood('silent', port, from, IDLE);
    await sleep(1_500);
    const legit: { ok: boolean; ms: number }[] = [];
    let streamsMax = 0;
    let fdsMax = 0;
    const until = performance.now() + SECONDS * 1000;
    while (performance.now() < until) {
      legit.push(await timed(legitOne));
      legit.push(await timed(() => getTest(pair.ports.relay)));
      const m = await metrics();
      streamsMax = Math.max(streamsMax, metricValue(m, 'tunnel_streams_open') ?? 0);
      fdsMax = Math.max(fdsMax, fds(relayPid));
      await sleep(50);
    }
    const counts = await flood.stop();
    const m = await metrics();
    const streamsOpened = (metricValue(m, 'tunnel_streams_total') ?? 0) - streamsBefore;
    // Descriptors released: back within a few of the baseline once the flood is gone.
    const after = await waitUntil(
      'relay descriptors back to their baseline',
      () => {
        const n = fds(relayPid);
        return n <= base + 4 ? n : undefined;
      },
      15_000,
    ).catch(() => fds(relayPid));
    const refused = Object.fromEntries(
      ['first byte timeout', 'evicted', 'idle timeout', 'no tunnel', 'stream refused'].map((r) => [
        r,
        metricValue(m, 'relay_connections_refused_total', { reason: r }) ?? 0,
      ]),
    );
    return {
      legit,
      failed: legit.filter((l) => !l.ok).length,
      counts,
      streamsMax,
      streamsOpened,
      refused,
      fds: { before: base, max: fdsMax, after },
    };
  }

  /**
   * Writes the attack's row from `underFlood`'s result `r` (what got through is the failed
   * legitimate requests plus `extraThrough`) and checks what both floods must show: the
   * legitimate client never failed, and the relay's descriptors came back.
   */
  function recordFlood(
    name: string,
    r: Awaited<ReturnType<typeof underFlood>>,
    row: { attack: string; extraThrough: number; counted: string; extra: object },
  ) {
    recordAttack(name, {
      attack: row.attack,
      times: r.counts.opened,
      gotThrough: r.failed + row.extraThrough,
      counted: row.counted,
      legit: {
        tried: r.legit.length,
        ok: r.legit.length - r.failed,
        latenciesMs: r.legit.map((l) => l.ms),
      },
      extra: {
        closedByRelay: r.counts.closedByPeer,
        relayRefused: r.refused,
        relayStreamsOpenMax: r.streamsMax,
        ...row.extra,
        relayFds: r.fds,
      },
    });
    expect(r.legit.length).toBeGreaterThan(10);
    expect(r.failed).toBe(0);
    expect(row.extraThrough).toBe(0);
    expect(r.fds.after).toBeLessThanOrEqual(r.fds.before + 4);
  }

  it('1,030 idle connections on a forward whose client speaks first hold no stream; the forward and /test answer', async () => {
    const before = await echo.accepted();
    const r = await underFlood(ports.echo, '127.0.0.1', () => forwardClient(ports.echo));
    // Each legitimate try is one stream (and the echo forward's one target connection).
    const floodStreams = Math.max(0, r.streamsOpened - r.legit.length);
    const floodReached = Math.max(0, (await echo.accepted()) - before - r.legit.length / 2);
    recordFlood('relay-forward-idle-clients', r, {
      attack: `${IDLE} TCP connections to a RELAY_FORWARDS port (client speaks first) that never send a byte, from the legitimate client's address, each re-opened at once when the relay closes it, for ${SECONDS} s`,
      extraThrough: floodStreams,
      counted:
        'legitimate forward and /test requests that failed, and tunnel streams the flood opened',
      extra: { floodConnectionsThatReachedTheTarget: floodReached },
    });
    // Idle connections hold no stream: at most the legitimate client's last two (a forward
    // connection and a /test), which may still be closing when the metrics are read.
    expect(r.streamsMax).toBeLessThanOrEqual(2);
  });

  it('1,030 idle connections on a server-first forward hold at most 256 streams; the forward and /test answer', async () => {
    // The flood comes from another address than the legitimate client: on a server-first
    // forward a waiting connection holds a stream, so the cap is low, and a legitimate client
    // of the flood's own address could be evicted while it waits for the banner.
    const r = await underFlood(ports.banner, '127.0.0.2', () =>
      forwardClient(ports.banner, BANNER),
    );
    // Besides the waiting ones, the legitimate client's last two streams may still be closing.
    const pastCap = Math.max(0, r.streamsMax - SERVER_FIRST_CAP - 2);
    recordFlood('relay-forward-server-first-idle-clients', r, {
      attack: `${IDLE} TCP connections to a RELAY_FORWARDS_SERVER_FIRST port that read the banner and never send a byte, from 127.0.0.2, each re-opened at once when the relay closes it, for ${SECONDS} s`,
      extraThrough: pastCap,
      counted: `legitimate forward and /test requests that failed, and streams held past the cap of ${SERVER_FIRST_CAP} waiting`,
      extra: { streamsOpened: r.streamsOpened },
    });
    expect(r.streamsMax).toBeGreaterThan(0);
  });
});
