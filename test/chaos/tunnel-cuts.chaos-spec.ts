import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli, type DaemonProcess } from '../support/daemon';
import { freePort } from '../support/ports';
import { keygen, waitForTunnel } from '../support/system';
import { recordChaos, SCALE } from './support';

/**
 * The tunnel under forced cuts (issue #9): a TCP proxy sits between the relay and the worker and
 * resets every connection through it (the TCP connection under the WebSocket) while clients
 * load /test through the relay. Every request must end within 5 s with 200 or a clean error
 * (an HTTP error or a closed connection, never a hang).
 *
 * Recovery (first /test 200 after the worker is reachable again) is measured for two kinds:
 * - isolated cuts, each after the session was up longer than the relay's stable time (10 s):
 *   the reconnect backoff is at its first step, and recovery must be under 1 s;
 * - a burst of cuts back to back with short outages: the backoff grows as docs/ARCHITECTURE.md ("Tunnel") promises
 *   ("resets only after a stable session"), so recovery is recorded, not bounded by 1 s.
 *
 * Cuts: CHAOS_SCALE=full 100 isolated + 6 in a burst (about 20 minutes); short 3 + 4.
 */
const ISOLATED = SCALE.full ? 100 : 3;
const BURST = SCALE.full ? 6 : 4;
const STABLE_MS = 10_500;
jest.setTimeout((ISOLATED * (STABLE_MS + 3_000) + BURST * 40_000 + 60_000) * 1.5);

/** A TCP proxy whose connections can be reset at once, and that can refuse new ones. */
async function cutProxy(
  target: number,
): Promise<{ port: number; cut(): number; down(v: boolean): void; close(): Promise<void> }> {
  const live = new Set<Socket>();
  let refusing = false;
  const server: Server = createServer((client) => {
    if (refusing) return client.resetAndDestroy();
    const upstream = connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      live.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        live.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    cut: () => {
      const n = live.size / 2;
      for (const s of live) s.resetAndDestroy();
      return n;
    },
    down: (v) => {
      refusing = v;
    },
    close: () =>
      new Promise((r) => {
        for (const s of live) s.destroy();
        server.close(() => r());
      }),
  };
}

type Outcome = 'ok' | 'clean' | 'hung';

function getTest(port: number): Promise<{ outcome: Outcome; ms: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    let done = false;
    const finish = (outcome: Outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const ms = performance.now() - started;
      resolve({ outcome: ms > 5_000 ? 'hung' : outcome, ms });
    };
    const req = get({ host: '127.0.0.1', port, path: '/test', agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () =>
        finish(res.statusCode === 200 && body === '{"response":"ok"}' ? 'ok' : 'clean'),
      );
      res.on('error', () => finish('clean'));
    });
    req.on('error', () => finish('clean'));
    const timer = setTimeout(() => {
      finish('hung');
      req.destroy();
    }, 5_500);
  });
}

describe(`tunnel under forced cuts (${SCALE.name}: ${ISOLATED} isolated + ${BURST} in a burst)`, () => {
  let dir: string;
  let worker: DaemonProcess;
  let relay: DaemonProcess;
  let proxy: Awaited<ReturnType<typeof cutProxy>>;
  let relayPort: number;
  let adminPort: number;
  const counts = { ok: 0, clean: 0, hung: 0, maxMs: 0 };
  let loading = true;
  let load: Promise<void>[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-cuts-'));
    mkdirSync(path.join(dir, 'experiments'));
    const key = keygen(dir);
    const tunnel = await freePort();
    worker = runCli(
      ['worker'],
      {
        TUNNEL_KEY_FILE: key,
        TUNNEL_LISTEN: `127.0.0.1:${tunnel}`,
        API_LISTEN: `127.0.0.1:${await freePort()}`,
        DATA_FOLDER: path.join(dir, 'data'),
        EXPERIMENTS_DIR: path.join(dir, 'experiments'),
        GPU_DEVICES: 'none',
      },
      dir,
    );
    await worker.waitForLog('worker ready', 60_000);
    proxy = await cutProxy(tunnel);
    relayPort = await freePort();
    adminPort = await freePort();
    relay = runCli(
      ['relay'],
      {
        TUNNEL_KEY_FILE: key,
        TUNNEL_CONNECT: `ws://127.0.0.1:${proxy.port}`,
        RELAY_LISTEN: `127.0.0.1:${relayPort}`,
        ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
      },
      dir,
    );
    await waitForTunnel(adminPort, 30_000);
    // Steady load: three clients, one request after another, through the relay.
    load = Array.from({ length: 3 }, async () => {
      while (loading) {
        const r = await getTest(relayPort);
        counts[r.outcome]++;
        counts.maxMs = Math.max(counts.maxMs, Math.round(r.ms));
        if (r.outcome !== 'ok') await new Promise((res) => setTimeout(res, 20));
      }
    });
  });

  afterAll(async () => {
    loading = false;
    await Promise.all(load);
    await relay?.stop();
    await worker?.stop();
    await proxy?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Polls /test through the relay until a 200; returns the ms it took from `since`. */
  async function recovered(since: number): Promise<number> {
    for (;;) {
      if ((await getTest(relayPort)).outcome === 'ok') return performance.now() - since;
      if (performance.now() - since > 120_000) throw new Error('relay not back after 120 s');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it('every request ends within 5 s with 200 or a clean error; back within 1 s of each isolated cut', async () => {
    const isolated: number[] = [];
    const burst: number[] = [];
    let cutConnections = 0;
    for (let i = 0; i < ISOLATED; i++) {
      await new Promise((r) => setTimeout(r, STABLE_MS)); // the session's age passes stableMs
      cutConnections += proxy.cut(); // the worker stays reachable: recovery counts from here
      isolated.push(Math.round(await recovered(performance.now())));
    }
    for (let i = 0; i < BURST; i++) {
      proxy.down(true);
      cutConnections += proxy.cut();
      await new Promise((r) => setTimeout(r, 200)); // a short outage: dials are refused
      proxy.down(false);
      burst.push(Math.round(await recovered(performance.now())));
    }
    loading = false;
    await Promise.all(load);
    const figures = {
      scale: SCALE.name,
      cuts: ISOLATED + BURST,
      connectionsReset: cutConnections,
      requests: counts.ok + counts.clean + counts.hung,
      ok: counts.ok,
      cleanErrors: counts.clean,
      hung: counts.hung,
      slowestRequestMs: counts.maxMs,
      isolatedRecoveryMs: {
        max: Math.max(...isolated),
        median: isolated.sort((a, b) => a - b)[isolated.length >> 1],
      },
      burstRecoveryMs: burst,
    };
    recordChaos('tunnel-cuts', figures);
    expect(counts.hung).toBe(0);
    expect(counts.ok).toBeGreaterThan(0);
    expect(cutConnections).toBeGreaterThanOrEqual(ISOLATED);
    expect(Math.max(...isolated)).toBeLessThanOrEqual(1_000);
    expect((await getTest(relayPort)).outcome).toBe('ok');
  });
});
