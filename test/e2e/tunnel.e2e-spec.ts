import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exitCode, runCli } from '../support/daemon';
import { freePort } from '../support/ports';
import { keygen, metricValue, startPair, waitForTunnel, type Pair } from '../support/system';

jest.setTimeout(120_000);

/** Sends raw bytes to host:port, half-closes, and returns everything the peer sent back. */
function rawExchange(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.write(request, () => s.end()); // half-close: we send FIN, then still read the answer
  });
}

async function getTest(port: number): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${port}/test`);
  expect(res.status).toBe(200);
  return res.json();
}

describe('tunnel between the built relay and worker', () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await startPair();
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it('answers GET /test on the relay from the worker, as spiped did', async () => {
    expect(await getTest(pair.ports.relay)).toEqual({ response: 'ok' });
    const health = (await (await fetch(`http://127.0.0.1:${pair.ports.admin}/healthz`)).json()) as {
      tunnels: unknown[];
    };
    expect(health.tunnels).toEqual([expect.objectContaining({ state: 'up' })]);
  });

  it('carries 200 concurrent connections, each on its own stream', async () => {
    const answers = await Promise.all(Array.from({ length: 200 }, () => getTest(pair.ports.relay)));
    expect(answers.every((a) => (a as { response: string }).response === 'ok')).toBe(true);
    const metrics = await (await fetch(`http://127.0.0.1:${pair.ports.admin}/metrics`)).text();
    expect(metricValue(metrics, 'tunnel_streams_total')).toBeGreaterThanOrEqual(200);
  });

  it('keeps a half-closed connection readable until the worker answers', async () => {
    const reply = await rawExchange(
      pair.ports.relay,
      'GET /test HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n',
    );
    expect(reply).toMatch(/^HTTP\/1\.1 200/);
    expect(reply).toContain('{"response":"ok"}');
  });

  it('reconnects by itself when the worker restarts', async () => {
    expect(await pair.worker.stop('SIGKILL')).toBe('SIGKILL');
    // With no tunnel, an HTTP request is answered at once (never left hanging) with 503 and
    // the reason in one line, and counted.
    await new Promise((r) => setTimeout(r, 300));
    const down = await fetch(`http://127.0.0.1:${pair.ports.relay}/test`);
    expect(down.status).toBe(503);
    expect(await down.text()).toMatch(
      /^gpu-sidecar relay: no tunnel to a worker is up \(ws:\/\/127\.0\.0\.1:\d+\/: .+\)\n$/,
    );
    const metrics = await (await fetch(`http://127.0.0.1:${pair.ports.admin}/metrics`)).text();
    expect(
      metricValue(metrics, 'relay_connections_refused_total', { reason: 'no tunnel' }),
    ).toBeGreaterThan(0);

    await pair.restartWorker();
    await waitForTunnel(pair.ports.admin);
    expect(await getTest(pair.ports.relay)).toEqual({ response: 'ok' });
  });
});

describe('one end sealing with node:crypto, the other with the native frame cipher', () => {
  let pair: Pair;
  beforeAll(async () => {
    // The relay as on a front host where npm ci found no compiler; the worker as built here.
    pair = await startPair({ relay: { GPU_SIDECAR_NATIVE: 'off' } });
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it('each says which it uses, and they talk: the same wire either way', async () => {
    await waitForTunnel(pair.ports.admin);
    const cipher = (log: string): string | undefined =>
      log
        .split('\n')
        .filter((l) => l.includes('"msg":"tunnel frame cipher"'))
        .map((l) => (JSON.parse(l) as { implementation: string }).implementation)[0];
    expect(cipher(pair.relay.stderr())).toMatch(/^node:crypto \(native frame cipher turned off/);
    expect(cipher(pair.worker.stderr())).toMatch(/^native \(OpenSSL context per key/);
    // Frames both ways: requests sealed by node:crypto, answers by OpenSSL's re-used context.
    const answers = await Promise.all(Array.from({ length: 100 }, () => getTest(pair.ports.relay)));
    expect(answers.every((a) => (a as { response: string }).response === 'ok')).toBe(true);
    const metrics = await (await fetch(`http://127.0.0.1:${pair.ports.admin}/metrics`)).text();
    expect(metricValue(metrics, 'tunnel_streams_total')).toBeGreaterThanOrEqual(100);
    expect(metrics).not.toMatch(/^tunnel_frames_rejected_total\{/m); // no frame refused
  });
});

describe('tunnel authentication between processes', () => {
  it('refuses a relay with another key, counts the reason, and never reaches the API', async () => {
    const pair = await startPair();
    try {
      const otherKey = keygen(pair.dir, 'other.key');
      const admin = await freePort();
      const relayPort = await freePort();
      const intruder = runCli(
        ['relay'],
        {
          ...pair.relayEnv,
          TUNNEL_KEY_FILE: otherKey,
          ADMIN_LISTEN: `127.0.0.1:${admin}`,
          RELAY_LISTEN: `127.0.0.1:${relayPort}`,
        },
        pair.dir,
      );
      // The relay says why, as the worker does: not a dropped connection, a key it refused.
      await intruder.waitForLog('"reason":"bad key"');
      const health = await fetch(`http://127.0.0.1:${admin}/healthz`);
      expect(health.status).toBe(503);
      const body = (await health.json()) as { tunnels: { lastError?: string }[] };
      expect(body.tunnels[0].lastError).toBe('bad key');
      const refused = await fetch(`http://127.0.0.1:${relayPort}/test`);
      expect(refused.status).toBe(503);
      expect(await refused.text()).toContain(': bad key)');
      const relayMetrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      expect(
        metricValue(relayMetrics, 'tunnel_handshakes_total', {
          result: 'failed',
          reason: 'bad key',
        }),
      ).toBeGreaterThan(0);
      expect(
        metricValue(relayMetrics, 'tunnel_handshakes_total', { result: 'ok' }),
      ).toBeUndefined();
      // Its log line comes by another pipe than the answers above: wait for it, do not race it.
      await pair.worker.waitForLog('"reason":"bad key"');
      await intruder.stop();
    } finally {
      await pair.stop();
    }
  });

  it('refuses to start with a key file others can read, saying the chmod', async () => {
    const pair = await startPair();
    await pair.stop();
    const { chmodSync } = await import('node:fs');
    chmodSync(pair.keyFile, 0o644);
    const p = runCli(['relay'], pair.relayEnv, pair.dir);
    const code = await p.stop('SIGCONT').catch(() => null);
    expect(code).toBe(1);
    expect(p.stderr()).toContain(`chmod 600 ${pair.keyFile}`);
  });

  it('refuses to start on a symlinked, FIFO, huge or foreign key file, saying what it found', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'gsc-keytricks-'));
    const real = keygen(dir, 'real.key');
    const tricks: Record<string, string> = {};
    tricks.symlink = path.join(dir, 'link.key');
    symlinkSync(real, tricks.symlink);
    tricks.fifo = path.join(dir, 'fifo.key');
    execFileSync('mkfifo', ['-m', '600', tricks.fifo]);
    tricks.huge = path.join(dir, 'huge.key');
    writeFileSync(tricks.huge, Buffer.alloc(1 << 20, 1), { mode: 0o600 });
    tricks.foreign = path.join(dir, 'foreign.key');
    writeFileSync(tricks.foreign, Buffer.alloc(32, 1), { mode: 0o600 });
    chownSync(tricks.foreign, 4242, 4242); // the tests run as root (see keys.spec.ts)
    const said: Record<string, RegExp> = {
      symlink: /is a symbolic link: name the file itself/,
      fifo: /is a FIFO, not a regular file/,
      huge: /holds 1048576 bytes, more than 4096/,
      foreign: /is owned by uid 4242, not by this daemon's user/,
    };
    for (const [trick, file] of Object.entries(tricks)) {
      for (const daemon of ['relay', 'worker']) {
        const env = {
          TUNNEL_KEY_FILE: file,
          TUNNEL_CONNECT: 'ws://127.0.0.1:1',
          RELAY_LISTEN: `127.0.0.1:${await freePort()}`,
          ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
          TUNNEL_LISTEN: `127.0.0.1:${await freePort()}`,
          API_LISTEN: `127.0.0.1:${await freePort()}`,
          DATA_FOLDER: path.join(dir, 'data'),
          EXPERIMENTS_DIR: dir,
          GPU_DEVICES: 'none',
        };
        const p = runCli([daemon], daemon === 'relay' ? { ...env, TUNNEL_LISTEN: '' } : env, dir);
        expect([trick, daemon, await exitCode(p)]).toEqual([trick, daemon, 1]);
        expect(p.stderr()).toMatch(said[trick]);
      }
    }
  });
});
