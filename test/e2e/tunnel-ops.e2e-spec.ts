import {
  chmodSync,
  copyFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { createServer, get, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { keyFingerprint } from '../../libs/tunnel/src';
import { runCli, type DaemonProcess } from '../support/daemon';
import { freePort } from '../support/ports';
import {
  keygen,
  metricsText,
  metricValue,
  relayEnvWith,
  relayHealth,
  selfSignedCert,
  waitForTunnel,
  waitUntil,
  workerEnvIn,
} from '../support/system';

jest.setTimeout(120_000);

/** What one GET /test through the relay came to: 'ok', an error message, or 'hung'. */
type Outcome = 'ok' | 'hung' | string;

/** GET /test on its own TCP connection (so each call is a new stream), bounded in time. */
function callTest(port: number, timeoutMs = 5_000): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path: '/test', agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () =>
        resolve(res.statusCode === 200 && body === '{"response":"ok"}' ? 'ok' : `HTTP ${body}`),
      );
      res.on('error', (err) => resolve(err.message));
    });
    req.setTimeout(timeoutMs, () => {
      resolve('hung');
      req.destroy();
    });
    req.on('error', (err) => resolve(err.message));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `n` clients calling /test in a loop until `stop()`; each result with its start time. */
function load(port: number, n: number) {
  const results: { start: number; outcome: Outcome }[] = [];
  let running = true;
  const client = async () => {
    while (running) {
      const start = performance.now();
      const outcome = await callTest(port);
      results.push({ start, outcome });
      // A refused connection fails at once: pause so a failing test never spins the CPU.
      if (outcome !== 'ok') await sleep(20);
    }
  };
  const clients = Array.from({ length: n }, client);
  loads.push(() => (running = false));
  return {
    results,
    failures: () => results.filter((r) => r.outcome !== 'ok'),
    stop: async () => {
      running = false;
      await Promise.all(clients);
      return results;
    },
  };
}

/** Every daemon a test starts, stopped at its end whatever happened; load loops too. */
const started: DaemonProcess[] = [];
const loads: (() => void)[] = [];
function start(args: string[], env: Record<string, string>, cwd: string): DaemonProcess {
  const p = runCli(args, env, cwd);
  started.push(p);
  return p;
}
const dirs: string[] = [];
afterEach(async () => {
  for (const stop of loads.splice(0)) stop();
  // SIGTERM: a clean stop also ends each worker's embedded redis-server.
  await Promise.all(started.splice(0).map((p) => p.stop('SIGTERM')));
  // Workers a test SIGKILLed left theirs running: end them by their pid files.
  for (const dir of dirs.splice(0)) {
    for (const w of readdirSync(dir).filter((n) => n.startsWith('worker-'))) {
      try {
        process.kill(Number(readFileSync(path.join(dir, w, 'data/redis/redis.pid'), 'utf8')));
      } catch {
        /* none, or already gone */
      }
    }
  }
});

function newDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-ops-'));
  dirs.push(dir);
  return dir;
}

describe('reverse mode: the worker dials the relay', () => {
  it('answers /test through the tunnel the worker opened; a wrong key is refused and counted', async () => {
    const dir = newDir();
    const key = keygen(dir);
    const tunnelPort = await freePort();
    const r = await relayEnvWith({
      TUNNEL_KEY_FILE: key,
      TUNNEL_LISTEN: `127.0.0.1:${tunnelPort}`,
    });
    const relay = start(['relay'], r.env, dir);
    await relay.waitForLog('relay ready');
    expect((await relayHealth(r.admin)).status).toBe(503);

    const w = await workerEnvIn(dir, key);
    const reverse = { TUNNEL_LISTEN: '', TUNNEL_CONNECT: `ws://127.0.0.1:${tunnelPort}` };
    const worker = start(['worker'], { ...w.env, ...reverse }, dir);
    await waitForTunnel(r.admin);
    expect(await callTest(r.relay)).toBe('ok');
    const health = await relayHealth(r.admin);
    expect(health.tunnels).toEqual([
      expect.objectContaining({
        url: expect.stringMatching(/^reverse:127\.0\.0\.1:\d+$/),
        state: 'up',
      }),
    ]);
    // The GPU host opens no port for the tunnel: nothing listens where it would in forward mode.
    await expect(
      new Promise((resolve, reject) =>
        connect(w.tunnel, '127.0.0.1').once('connect', resolve).once('error', reject),
      ),
    ).rejects.toThrow(/ECONNREFUSED/);

    // A worker with another key: the relay (the listening side here) refuses it and says why.
    const other = keygen(dir, 'other.key');
    const w2 = await workerEnvIn(dir, other);
    const intruder = start(['worker'], { ...w2.env, ...reverse }, dir);
    await intruder.waitForLog('tunnel connection failed');
    const metrics = await metricsText(`http://127.0.0.1:${r.admin}/metrics`);
    expect(
      metricValue(metrics, 'tunnel_handshakes_total', { result: 'failed', reason: 'bad key' }),
    ).toBeGreaterThan(0);
    await relay.waitForLog('"reason":"bad key"'); // by another pipe than the metrics: not raced
    expect((await relayHealth(r.admin)).tunnels).toHaveLength(1);

    // The worker going away takes its tunnel off the list at once.
    await worker.stop('SIGKILL');
    await waitUntil(
      'reverse tunnel dropped',
      async () => (await relayHealth(r.admin)).status === 503,
    );
    expect(await callTest(r.relay)).not.toBe('ok');
  });
});

describe('two workers behind one relay', () => {
  it('spreads streams over both and, when one is killed, fails nothing started 1 s later', async () => {
    const dir = newDir();
    const key = keygen(dir);
    const [w1, w2] = [await workerEnvIn(dir, key), await workerEnvIn(dir, key)];
    const workers = [start(['worker'], w1.env, dir), start(['worker'], w2.env, dir)];
    await Promise.all(workers.map((w) => w.waitForLog('worker ready')));
    const r = await relayEnvWith({
      TUNNEL_KEY_FILE: key,
      TUNNEL_CONNECT: `ws://127.0.0.1:${w1.tunnel},ws://127.0.0.1:${w2.tunnel}`,
    });
    start(['relay'], r.env, dir);
    await waitUntil('both tunnels up', async () => {
      const h = await relayHealth(r.admin);
      return h.tunnels.length === 2 && h.tunnels.every((t) => t.state === 'up');
    });

    const clients = load(r.relay, 50);
    // Least open streams first: while 50 clients run, both tunnels carry streams.
    const busy = await waitUntil('streams on both tunnels', async () => {
      const h = await relayHealth(r.admin);
      return h.tunnels.every((t) => t.streams > 0) && h.tunnels;
    });
    expect(busy).toHaveLength(2);
    await sleep(500);
    const killedAt = performance.now();
    workers[1].child.kill('SIGKILL');
    await sleep(2_500);
    const results = await clients.stop();

    const before = results.filter((x) => x.start < killedAt);
    const after = results.filter((x) => x.start >= killedAt + 1_000);
    expect(before.filter((x) => x.outcome === 'ok').length).toBeGreaterThan(50);
    expect(after.length).toBeGreaterThan(50);
    expect(after.filter((x) => x.outcome !== 'ok')).toEqual([]);
    // Streams in flight on the dead tunnel may fail, but cleanly, never by hanging until the
    // client's own timeout: a 502 saying why if the worker had not answered yet, else the
    // connection reset or closed.
    const failed = clients.failures();
    expect(failed.filter((x) => x.outcome === 'hung')).toEqual([]);
    for (const f of failed) {
      expect(f.outcome).toMatch(
        /^HTTP gpu-sidecar relay: the tunnel ended before the worker answered: |ECONNRESET|socket hang up|EPIPE/,
      );
    }

    const health = await relayHealth(r.admin);
    expect(health.status).toBe(200);
    expect(health.tunnels).toEqual([
      expect.objectContaining({ url: `ws://127.0.0.1:${w1.tunnel}/`, state: 'up' }),
      expect.objectContaining({
        url: `ws://127.0.0.1:${w2.tunnel}/`,
        state: 'down',
        lastError: expect.any(String),
      }),
    ]);
  });
});

/** How many times a daemon logged that it loaded its key ring (start excluded: only reloads). */
function reloads(p: DaemonProcess): number {
  return p.stderr().split('tunnel key ring loaded').length - 1;
}

/** The `keys` of a daemon's last 'tunnel key ring loaded' line (fingerprints, in ring order). */
function lastRing(p: DaemonProcess): string[] {
  const lines = (p.stderr() + p.stdout()).split('\n');
  const line = lines.filter((l) => l.includes('tunnel key ring loaded')).pop();
  return (JSON.parse(line ?? '{}') as { keys?: string[] }).keys ?? [];
}

/** The warnings a daemon logged about invalid variables on SIGHUP, as logged (JSON). */
function hupWarnings(p: DaemonProcess): { invalid?: string[]; msg?: string }[] {
  return (p.stderr() + p.stdout())
    .split('\n')
    .filter((l) => l.includes('SIGHUP: invalid'))
    .map((l) => JSON.parse(l) as { invalid?: string[]; msg?: string });
}

/** Sends SIGHUP and waits until the daemon logged a reload, or a failed one. */
async function hup(p: DaemonProcess): Promise<void> {
  const [ok, failed] = [reloads(p), p.stderr().split('reload failed').length];
  p.child.kill('SIGHUP');
  await waitUntil(
    'reload logged',
    () => reloads(p) > ok || p.stderr().split('reload failed').length > failed,
  );
}

describe('key rotation without downtime', () => {
  it('rotates with SIGHUP step by step while the session and /test stay up', async () => {
    const dir = newDir();
    const oldKey = keygen(dir, 'old.key');
    const newKey = keygen(dir, 'new.key');
    const fp = (f: string) => keyFingerprint(readFileSync(f));
    const workerFile = path.join(dir, 'worker.env');
    const relayFile = path.join(dir, 'relay.env');
    const use = (file: string, ...keys: string[]) =>
      writeFileSync(file, `TUNNEL_KEY_FILE=${keys.join(',')}\n`);
    use(workerFile, oldKey);
    use(relayFile, oldKey);

    // TUNNEL_KEY_FILE comes from the env files only, so SIGHUP reads the edited list.
    const w = await workerEnvIn(dir, oldKey);
    const { TUNNEL_KEY_FILE: _w, ...workerEnv } = w.env;
    const runWorker = () => start(['worker', '--env-file', workerFile], workerEnv, dir);
    let worker = runWorker();
    await worker.waitForLog('worker ready');
    const r = await relayEnvWith({ TUNNEL_CONNECT: `ws://127.0.0.1:${w.tunnel}` });
    const relay = start(['relay', '--env-file', relayFile], r.env, dir);
    await waitForTunnel(r.admin);
    const [session] = (await relayHealth(r.admin)).tunnels;
    expect(session).toMatchObject({ state: 'up', session: expect.any(Number) });
    const metricsUrl = `http://127.0.0.1:${r.admin}/metrics`;

    const clients = load(r.relay, 4);
    let bytes = 0;
    /** The session is the same one, /test answers, and bytes keep flowing through it. */
    const stillUp = async () => {
      await sleep(200);
      expect((await relayHealth(r.admin)).tunnels).toEqual([
        expect.objectContaining({ state: 'up', session: session.session, since: session.since }),
      ]);
      expect(await callTest(r.relay)).toBe('ok');
      const now = metricValue(await metricsText(metricsUrl), 'tunnel_bytes_total', {
        direction: 'out',
      });
      expect(now).toBeGreaterThan(bytes);
      bytes = now ?? 0;
      expect(clients.failures()).toEqual([]);
    };
    await stillUp();

    // (1) The worker accepts both keys.
    use(workerFile, oldKey, newKey);
    await hup(worker);
    expect(lastRing(worker)).toEqual([fp(oldKey), fp(newKey)]);
    await stillUp();

    // (2) The relay connects with the new key from now on, still accepting the old one.
    use(relayFile, newKey, oldKey);
    await hup(relay);
    expect(lastRing(relay)).toEqual([fp(newKey), fp(oldKey)]);
    await stillUp();

    // A bad key file on SIGHUP: the daemon says why, stays up, and keeps the keys it had.
    const loose = path.join(dir, 'loose.key');
    copyFileSync(newKey, loose);
    chmodSync(loose, 0o644);
    use(workerFile, newKey, loose);
    await hup(worker);
    expect(worker.stderr()).toContain('reload failed, keeping the keys in use');
    expect(worker.stderr()).toContain(`chmod 600 ${loose}`);
    expect(lastRing(worker)).toEqual([fp(oldKey), fp(newKey)]);
    writeFileSync(relayFile, 'TUNNEL_KEY_FILE=\n');
    await hup(relay);
    expect(relay.stderr()).toMatch(/reload failed, keeping the keys in use: TUNNEL_KEY_FILE/);
    await stillUp();

    // (3) Both drop the old key, each env file also holding a bad value of another variable:
    // SIGHUP takes TUNNEL_KEY_FILE alone, so the keys are reloaded all the same, and one warning
    // names the bad variable (it would take effect only on a restart, which it would stop).
    writeFileSync(workerFile, `TUNNEL_KEY_FILE=${newKey}\nREDIS_URL=http://redis.invalid\n`);
    await hup(worker);
    writeFileSync(relayFile, `TUNNEL_KEY_FILE=${newKey}\nRELAY_FORWARDS=nonsense\n`);
    await hup(relay);
    expect(lastRing(worker)).toEqual([fp(newKey)]);
    expect(lastRing(relay)).toEqual([fp(newKey)]);
    expect(hupWarnings(worker)).toEqual([
      expect.objectContaining({
        invalid: ['REDIS_URL'],
        msg: expect.stringMatching(/^SIGHUP: invalid REDIS_URL .*take effect only on restart/),
      }),
    ]);
    expect(hupWarnings(relay)).toEqual([expect.objectContaining({ invalid: ['RELAY_FORWARDS'] })]);
    use(workerFile, newKey); // what the restart below reads
    use(relayFile, newKey);
    await stillUp();
    expect(await clients.stop()).not.toContainEqual(
      expect.objectContaining({ outcome: expect.not.stringMatching(/^ok$/) }),
    );
    expect(relay.child.exitCode).toBeNull();

    // A fresh connection works with the new key alone: restart the worker, the relay redials.
    await worker.stop();
    worker = runWorker();
    await waitUntil('a new session', async () => {
      const [t] = (await relayHealth(r.admin)).tunnels;
      return t.state === 'up' && t.session !== session.session;
    });
    expect(await callTest(r.relay)).toBe('ok');

    // A relay that still holds only the old key is refused.
    const badKeyBefore = worker.stderr().split('"reason":"bad key"').length;
    const stale = await relayEnvWith({
      TUNNEL_KEY_FILE: oldKey,
      TUNNEL_CONNECT: `ws://127.0.0.1:${w.tunnel}`,
    });
    start(['relay'], stale.env, dir);
    await waitUntil('stale key refused', () =>
      worker.stderr().split('"reason":"bad key"').length > badKeyBefore ? true : undefined,
    );
    expect((await relayHealth(stale.admin)).status).toBe(503);
    // The worker's side counts it with its reason, on the worker API's /metrics.
    const workerMetrics = await metricsText(`http://127.0.0.1:${w.api}/metrics`);
    expect(
      metricValue(workerMetrics, 'tunnel_handshakes_total', {
        result: 'failed',
        reason: 'bad key',
      }),
    ).toBeGreaterThan(0);
    expect(await callTest(r.relay)).toBe('ok');
  });
});

/** A minimal HTTP CONNECT proxy that records each CONNECT target. */
async function connectProxy(): Promise<{ port: number; seen: string[]; close(): void }> {
  const seen: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((_req, res) => res.writeHead(405).end());
  server.on('connect', (req, client: Socket, head: Buffer) => {
    seen.push(req.url ?? '');
    sockets.add(client);
    const at = (req.url ?? '').lastIndexOf(':');
    const upstream = connect(Number(req.url!.slice(at + 1)), req.url!.slice(0, at), () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    port,
    seen,
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

describe('wss:// and HTTPS_PROXY', () => {
  it('serves wss:// with a certificate made here, trusted by the relay through NODE_EXTRA_CA_CERTS', async () => {
    const dir = newDir();
    const key = keygen(dir);
    const tls = selfSignedCert(dir);
    const w = await workerEnvIn(dir, key);
    start(['worker'], { ...w.env, TUNNEL_TLS_CERT: tls.cert, TUNNEL_TLS_KEY: tls.key }, dir);
    const url = `wss://localhost:${w.tunnel}`;
    const r = await relayEnvWith({
      TUNNEL_KEY_FILE: key,
      TUNNEL_CONNECT: url,
      NODE_EXTRA_CA_CERTS: tls.cert,
    });
    const proxy = await connectProxy();
    try {
      const viaProxy = await relayEnvWith({
        TUNNEL_KEY_FILE: key,
        TUNNEL_CONNECT: `wss://127.0.0.1:${w.tunnel}`,
        NODE_EXTRA_CA_CERTS: tls.cert,
        HTTPS_PROXY: `http://127.0.0.1:${proxy.port}`,
      });
      // Without the certificate, the relay refuses the worker's TLS and says why.
      const untrusting = await relayEnvWith({ TUNNEL_KEY_FILE: key, TUNNEL_CONNECT: url });
      start(['relay'], r.env, dir);
      start(['relay'], viaProxy.env, dir);
      start(['relay'], untrusting.env, dir);

      await waitForTunnel(r.admin);
      expect(await callTest(r.relay)).toBe('ok');

      // Through the proxy: it saw the CONNECT, and the TLS session ran inside it.
      await waitForTunnel(viaProxy.admin);
      expect(await callTest(viaProxy.relay)).toBe('ok');
      expect(proxy.seen).toContain(`127.0.0.1:${w.tunnel}`);

      const refused = await waitUntil('untrusted certificate reported', async () => {
        const h = await relayHealth(untrusting.admin);
        // A first dial may land before the worker listens (ECONNREFUSED); the retries then
        // meet its certificate.
        const t = h.tunnels[0];
        return t?.state === 'down' && /self[- ]signed/i.test(String(t.lastError)) && h;
      });
      expect(refused.status).toBe(503);
      expect(refused.tunnels[0].lastError).toMatch(/self[- ]signed/i);
      const metrics = await metricsText(`http://127.0.0.1:${untrusting.admin}/metrics`);
      expect(
        metricValue(metrics, 'tunnel_handshakes_total', { result: 'failed', reason: 'tls error' }),
      ).toBeGreaterThan(0);
    } finally {
      proxy.close();
    }
  });
});
