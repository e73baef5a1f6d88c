import { connect } from 'node:net';
import { metricsText, metricValue, startPair, type Pair } from '../support/system';
import { fds, getTest, sleep, startFlood } from './peers';
import { ATTACK_SCALE, recordAttack, timed } from './support';

jest.setTimeout(ATTACK_SCALE.full ? 600_000 : 120_000);

const REQUEST = 'GET /test HTTP/1.1\r\nHost: x\r\n\r\n';

/**
 * One keep-alive connection: a request, its answer, then `waitMs` of silence and a second
 * request, as a client whose idle connection the server closes at that very moment. Resolves
 * with how it ended: `answered`, `closed` (a FIN: the client may retry) or the error code, and
 * the ms from the second request to that end (undefined if the close came first).
 */
function keepAliveBoundary(port: number, waitMs: number): Promise<{ end: string; ms?: number }> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let answers = 0;
    let buf = '';
    let sentAt = 0;
    const done = (end: string) => {
      resolve({ end, ms: sentAt ? performance.now() - sentAt : undefined });
      s.destroy();
    };
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      const n = buf.split('{"response":"ok"}').length - 1;
      if (n === answers) return;
      answers = n;
      if (answers === 2) return done('answered');
      setTimeout(() => {
        sentAt = performance.now();
        if (!s.destroyed) s.write(REQUEST);
      }, waitMs);
    });
    s.on('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
    s.on('close', () => done('closed'));
    s.write(REQUEST);
  });
}

describe(`clients of the relay's RELAY_LISTEN (${ATTACK_SCALE.name})`, () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await startPair();
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it('1,030 idle connections, re-opened when closed, hold no tunnel stream, and /test answers', async () => {
    const idle = 1_030;
    const seconds = ATTACK_SCALE.full ? 30 : 8;
    const relayPid = pair.relay.child.pid!;
    const base = fds(relayPid);
    const flood = startFlood('silent', pair.ports.relay, '127.0.0.1', idle);
    await sleep(1_500);
    const legit: { ok: boolean; ms: number }[] = [];
    let streamsMax = 0;
    let fdsMax = 0;
    const until = performance.now() + seconds * 1000;
    while (performance.now() < until) {
      legit.push(await timed(() => getTest(pair.ports.relay)));
      const m = await metricsText(`http://127.0.0.1:${pair.ports.admin}/metrics`);
      streamsMax = Math.max(streamsMax, metricValue(m, 'tunnel_streams_open') ?? 0);
      fdsMax = Math.max(fdsMax, fds(relayPid));
      await sleep(50);
    }
    const counts = await flood.stop();
    const failed = legit.filter((l) => !l.ok).length;
    recordAttack('relay-idle-clients', {
      attack: `${idle} TCP connections to RELAY_LISTEN that never send a byte, each re-opened at once when the relay closes it, for ${seconds} s`,
      times: counts.opened,
      gotThrough: failed,
      counted: 'GET /test through the relay that failed meanwhile',
      legit: {
        tried: legit.length,
        ok: legit.length - failed,
        latenciesMs: legit.map((l) => l.ms),
      },
      extra: {
        closedByRelay: counts.closedByPeer,
        relayStreamsOpenMax: streamsMax,
        relayFds: { before: base, max: fdsMax },
      },
    });
    expect(legit.length).toBeGreaterThan(10);
    expect(failed).toBe(0);
    // Idle connections hold no stream: only the /test being answered does.
    expect(streamsMax).toBeLessThanOrEqual(1);
  });

  it('an idle keep-alive connection closed by the API reaches the client as a FIN, never a reset', async () => {
    const rounds = ATTACK_SCALE.full ? 4 : 1;
    const perRound = 64;
    // Node's HTTP server closes an idle keep-alive connection 5 s + 1 s after its last answer:
    // the second requests leave from 25 ms before that moment to 37 ms after it.
    const at = (i: number) => 5_975 + (i % 32) * 2;
    const results: { end: string; ms?: number }[] = [];
    const direct: { end: string; ms?: number }[] = [];
    for (let r = 0; r < rounds; r++) {
      const [relayed, straight] = await Promise.all([
        Promise.all(
          Array.from({ length: perRound }, (_, i) => keepAliveBoundary(pair.ports.relay, at(i))),
        ),
        // The same, straight to API_LISTEN, for comparison (not asserted: the race is TCP's).
        Promise.all(
          Array.from({ length: 16 }, (_, i) => keepAliveBoundary(pair.ports.api, at(i * 2))),
        ),
      ]);
      results.push(...relayed);
      direct.push(...straight);
    }
    const count = (list: { end: string }[]) =>
      list.reduce<Record<string, number>>(
        (acc, r) => ({ ...acc, [r.end]: (acc[r.end] ?? 0) + 1 }),
        {},
      );
    const resets = results.filter((r) => r.end === 'ECONNRESET').length;
    const clean = results.filter((r) => r.end === 'answered' || r.end === 'closed');
    recordAttack('relay-keepalive-boundary', {
      attack:
        'a keep-alive client sends its next request just as the API closes the idle connection (6 s), through the relay',
      times: results.length,
      gotThrough: resets,
      counted: 'connection resets seen by the client (a clean close is a FIN)',
      legit: {
        tried: results.length,
        ok: clean.length,
        latenciesMs: clean.flatMap((r) => (r.ms === undefined ? [] : [r.ms])),
      },
      extra: { throughRelay: count(results), directToApiListen: count(direct) },
    });
    expect(resets).toBe(0);
    expect(clean.length).toBe(results.length);
  });
});
