import { request } from 'node:http';
import { startPair, type Pair } from '../support/system';
import { ATTACK_SCALE, recordAttack } from './support';

jest.setTimeout(ATTACK_SCALE.full ? 300_000 : 120_000);

/** Rounds of the attack: each one GET /healthz, GET /metrics and POST /healthz. */
const ROUNDS = ATTACK_SCALE.full ? 100 : 10;
const ATTACKER = 'attacker.example';

interface Answer {
  status: number;
  body: string;
  ms: number;
}

/** One request to the relay's ADMIN_LISTEN with these headers (Host included), on a new connection. */
function send(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string>,
): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = request(
      { host: '127.0.0.1', port, method, path, headers, agent: false, timeout: 10_000 },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0 }),
        );
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, body: '', ms: performance.now() - t0 }));
    req.end(method === 'POST' ? '{}' : undefined);
  });
}

/**
 * DNS rebinding against the relay's admin listener (/healthz and /metrics on ADMIN_LISTEN),
 * as `api-dns-rebinding` does against the worker's API: a page on attacker.example whose name
 * now resolves to 127.0.0.1 sends `Host: attacker.example`, and a page elsewhere posts with its
 * own Origin. Meanwhile the operator's monitoring reads /healthz and /metrics by loopback and
 * by a name in ADMIN_HOSTS.
 */
describe(`DNS rebinding against the relay's ADMIN_LISTEN (${ATTACK_SCALE.name})`, () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await startPair({ relay: { ADMIN_HOSTS: 'front.example.org' } });
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it('serves nothing to a foreign Host, refuses a foreign Origin, and answers its own names', async () => {
    const port = pair.ports.admin;
    const attacks: Answer[] = [];
    const legit: Answer[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      for (const host of [ATTACKER, `${ATTACKER}:${port}`]) {
        attacks.push(await send(port, 'GET', '/healthz', { host }));
        attacks.push(await send(port, 'GET', '/metrics', { host }));
      }
      // A page elsewhere, through a name the relay answers to: its Origin tells.
      attacks.push(
        await send(port, 'POST', '/healthz', {
          host: `127.0.0.1:${port}`,
          origin: `http://${ATTACKER}`,
          'content-type': 'text/plain',
        }),
      );
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'front.example.org'])
        legit.push(await send(port, 'GET', i % 2 ? '/metrics' : '/healthz', { host }));
    }
    const served = attacks.filter((a) => a.status < 400 || a.status >= 500).length;
    const leaked = attacks.filter((a) => /tunnel_|"tunnels"/.test(a.body)).length;
    const legitOk = legit.filter((a) => a.status === 200).length;
    recordAttack('relay-admin-dns-rebinding', {
      attack:
        'GET /healthz and /metrics on ADMIN_LISTEN with Host attacker.example (with and without port), and POST with Origin http://attacker.example',
      times: attacks.length,
      gotThrough: served + leaked,
      counted: 'requests not refused with 421/403, and answers that carried tunnel state',
      legit: { tried: legit.length, ok: legitOk, latenciesMs: legit.map((a) => a.ms) },
      extra: { statuses: [...new Set(attacks.map((a) => a.status))] },
    });
    const foreignHost = attacks.filter((_, i) => i % 5 !== 4);
    expect(foreignHost.map((a) => a.status)).toEqual(foreignHost.map(() => 421));
    expect(JSON.parse(foreignHost[0].body).message).toMatch(
      /Host 'attacker.example' is not a name of the relay's admin listener.*ADMIN_HOSTS/,
    );
    const foreignOrigin = attacks.filter((_, i) => i % 5 === 4);
    expect(foreignOrigin.map((a) => a.status)).toEqual(foreignOrigin.map(() => 403));
    expect(leaked).toBe(0);
    expect(legitOk).toBe(legit.length);
  });
});
