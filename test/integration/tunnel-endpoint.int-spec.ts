import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import { connect, createServer as tcpServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import {
  generateKeyFile,
  TunnelDialer,
  TunnelEndpoint,
  type TunnelEndpointConfig,
  type TunnelEndpointOptions,
  type TunnelSession,
  type TunnelStream,
} from '../../libs/tunnel/src';
import { silentLogger } from '../../libs/config/src/logger';
import { randomRing, selfSignedCert, waitFor } from '../../libs/tunnel/src/testing/harness';

jest.setTimeout(20_000);

/**
 * TunnelEndpoint, the one end of the tunnels both daemons use: listening, dialing, wss://,
 * a key reload with a session up, and close. Real loopback sockets and real key files.
 */

interface Line {
  msg: string;
  [k: string]: unknown;
}

let dir: string;
const endpoints: TunnelEndpoint[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tunnel-endpoint-'));
});

afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
  rmSync(dir, { recursive: true, force: true });
});

async function keyFile(name: string): Promise<string> {
  const file = join(dir, name);
  await generateKeyFile(file);
  return file;
}

/** Starts an endpoint (closed after the test) whose log lines land in `lines`. */
async function start(
  config: Partial<TunnelEndpointConfig> & Pick<TunnelEndpointConfig, 'keyFiles'>,
  extra: Partial<TunnelEndpointOptions> = {},
): Promise<{ endpoint: TunnelEndpoint; lines: Line[] }> {
  const lines: Line[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  const endpoint = await TunnelEndpoint.start({
    config: { tunnelConnect: [], ...config },
    logger,
    dialer: { backoff: { initialMs: 20, maxMs: 100 } },
    ...extra,
  });
  endpoints.push(endpoint);
  return { endpoint, lines };
}

const LOOPBACK = { host: '127.0.0.1', port: 0 };

/** Serves `echo` on each session, as the worker serves its targets. */
const echoing: Partial<TunnelEndpointOptions> = {
  onSession: (s) =>
    s.on('stream', (_target: string, st: TunnelStream) => {
      st.on('error', () => undefined);
      st.pipe(st);
    }),
};

async function echo(session: TunnelSession, text: string): Promise<string> {
  const stream = session.openStream('echo');
  stream.end(text);
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

const urlOf = (e: TunnelEndpoint, scheme = 'ws', host = '127.0.0.1') =>
  `${scheme}://${host}:${e.address()!.port}/`;

describe('TunnelEndpoint', () => {
  it('listens (TUNNEL_LISTEN) and dials (TUNNEL_CONNECT); each side lists its tunnel and serves streams through onSession', async () => {
    const key = await keyFile('k');
    const { endpoint: worker, lines } = await start(
      { keyFiles: [key], tunnelListen: LOOPBACK },
      echoing,
    );
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'accepting tunnels',
        tunnel: expect.objectContaining({ port: worker.address()!.port }),
        tls: false,
      }),
    );
    expect(worker.views()).toEqual([]);

    const { endpoint: relay } = await start({ keyFiles: [key], tunnelConnect: [urlOf(worker)] });
    expect(relay.address()).toBeUndefined();
    await waitFor(() => relay.sessions().length === 1 && worker.sessions().length === 1);
    expect(relay.views()).toEqual([
      expect.objectContaining({ url: urlOf(worker), state: 'up', session: 1, streams: 0 }),
    ]);
    expect(worker.views()).toEqual([
      expect.objectContaining({ url: expect.stringMatching(/^reverse:127\.0\.0\.1:\d+$/) }),
    ]);
    expect(worker.views()[0]).toMatchObject({ state: 'up', session: 1 });
    expect(await echo(relay.sessions()[0], 'hello')).toBe('hello');

    // The relay serves nothing (no onSession): a stream the worker opens is refused.
    const back = worker.sessions()[0].openStream('echo');
    await expect(
      new Promise((resolve, reject) => back.once('error', reject).once('data', resolve)),
    ).rejects.toMatchObject({ reason: 'unknown target' });
  });

  it('shows a dialed tunnel connecting, then down with the last error (password redacted), then up', async () => {
    const key = await keyFile('k');
    const { endpoint: worker } = await start({ keyFiles: [key], tunnelListen: LOOPBACK });
    const port = worker.address()!.port;
    await worker.close();
    const url = `ws://user:secret@127.0.0.1:${port}/`;
    const { endpoint: relay } = await start({ keyFiles: [key], tunnelConnect: [url] });
    expect(relay.views()).toEqual([expect.objectContaining({ state: 'connecting' })]);
    await waitFor(() => relay.views()[0].state === 'down');
    const [down] = relay.views();
    expect(down.lastError).toMatch(/ECONNREFUSED/);
    expect(down.url).not.toContain('secret');
    expect(relay.sessions()).toEqual([]);

    await start({ keyFiles: [key], tunnelListen: { host: '127.0.0.1', port } });
    await waitFor(() => relay.views()[0].state === 'up');
    expect(relay.views()[0]).toMatchObject({ session: 1, lastError: undefined });
  });

  it('a session accepted on TUNNEL_LISTEN leaves the list when it ends; a dialed one stays, down, and comes back with a new number', async () => {
    const key = await keyFile('k');
    const { endpoint: worker } = await start({ keyFiles: [key], tunnelListen: LOOPBACK });
    const { endpoint: relay } = await start({ keyFiles: [key], tunnelConnect: [urlOf(worker)] });
    await waitFor(() => worker.sessions().length === 1 && relay.sessions().length === 1);
    const first = relay.sessions()[0];
    await worker.sessions()[0].close('going');
    await waitFor(() => worker.views().length === 0);
    await waitFor(() => relay.sessions().length === 1 && relay.sessions()[0] !== first);
    expect(relay.views()).toEqual([expect.objectContaining({ state: 'up', session: 2 })]);
    expect(worker.views()).toEqual([expect.objectContaining({ state: 'up', session: 2 })]);
  });

  it('serves wss:// with TUNNEL_TLS_CERT and TUNNEL_TLS_KEY', async () => {
    const key = await keyFile('k');
    const { certFile, keyFile: keyPem } = selfSignedCert(dir);
    const { endpoint: worker, lines } = await start(
      { keyFiles: [key], tunnelListen: LOOPBACK, tls: { certFile, keyFile: keyPem } },
      echoing,
    );
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'accepting tunnels', tls: true }));
    const ca = readFileSync(certFile);
    const { endpoint: relay } = await start(
      { keyFiles: [key], tunnelConnect: [urlOf(worker, 'wss', 'localhost')] },
      { dialer: { tlsCa: ca, backoff: { initialMs: 20, maxMs: 100 } } },
    );
    await waitFor(() => relay.sessions().length === 1);
    expect(await echo(relay.sessions()[0], 'over tls')).toBe('over tls');

    // Plain ws:// to a TLS port gets no tunnel.
    const { endpoint: plain } = await start({ keyFiles: [key], tunnelConnect: [urlOf(worker)] });
    await waitFor(() => plain.views()[0].state === 'down');
    expect(plain.sessions()).toEqual([]);
  });

  it('dials through HTTPS_PROXY, an HTTP CONNECT proxy', async () => {
    const key = await keyFile('k');
    const { endpoint: worker } = await start({ keyFiles: [key], tunnelListen: LOOPBACK }, echoing);
    const connects: string[] = [];
    const proxy = createServer();
    proxy.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
      connects.push(req.url ?? '');
      const [host, port] = (req.url ?? '').split(':');
      const upstream = connect(Number(port), host, () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client).pipe(upstream);
      });
      for (const sk of [client, upstream]) sk.on('error', () => undefined);
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => client.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    try {
      const { endpoint: relay } = await start({
        keyFiles: [key],
        tunnelConnect: [urlOf(worker)],
        httpsProxy: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
      });
      await waitFor(() => relay.sessions().length === 1);
      expect(await echo(relay.sessions()[0], 'proxied')).toBe('proxied');
      expect(connects).toEqual([`127.0.0.1:${worker.address()!.port}`]);
      await relay.close();
    } finally {
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    }
  });

  it('gives up on a CONNECT proxy that accepts and never answers, and dials again', async () => {
    const held: Socket[] = [];
    let accepted = 0;
    let closed = 0;
    const silent = tcpServer((s) => {
      accepted++;
      held.push(s);
      s.on('error', () => undefined);
      s.on('close', () => closed++);
      s.resume(); // reads the CONNECT request and never answers it
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const failures: { at: number; detail: string }[] = [];
    const t0 = performance.now();
    const dialer = new TunnelDialer({
      url: 'ws://gpu1.example:8080/',
      proxy: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`,
      keys: randomRing(),
      logger: silentLogger(),
      handshakeTimeoutMs: 300,
      backoff: { initialMs: 20, maxMs: 50 },
      onSession: () => undefined,
      onFailure: (detail) => failures.push({ at: performance.now() - t0, detail }),
    });
    try {
      dialer.start();
      await waitFor(() => failures.length >= 2, 5_000);
      expect(failures[0].detail).toMatch(/did not answer CONNECT gpu1\.example:8080 within 300 ms/);
      expect(failures[0].at).toBeLessThan(2_000);
      expect(accepted).toBeGreaterThanOrEqual(2);
      // Each given-up CONNECT closed its connection to the proxy.
      await waitFor(() => closed >= accepted - 1);
    } finally {
      await dialer.stop();
      for (const s of held) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });

  it('reload swaps the key ring for the next handshakes while the session up keeps going', async () => {
    const [oldKey, newKey] = [await keyFile('old'), await keyFile('new')];
    const { endpoint: worker, lines } = await start(
      { keyFiles: [oldKey], tunnelListen: LOOPBACK },
      echoing,
    );
    const { endpoint: relay } = await start({ keyFiles: [oldKey], tunnelConnect: [urlOf(worker)] });
    await waitFor(() => relay.sessions().length === 1);
    const session = relay.sessions()[0];
    const [before] = relay.views();

    // A file that cannot be used throws, and the keys in use stay.
    await expect(worker.reload([join(dir, 'missing')])).rejects.toThrow();
    await worker.reload([newKey]);
    const loaded = lines.filter((l) => l.msg === 'tunnel key ring loaded');
    expect(loaded).toHaveLength(1);
    expect(loaded[0].keys).toHaveLength(1);

    // The session up stays up and carries streams.
    expect(await echo(session, 'still here')).toBe('still here');
    expect(relay.views()).toEqual([
      expect.objectContaining({ state: 'up', session: before.session, since: before.since }),
    ]);
    // A newcomer with the old key is refused; one with the new key gets in.
    const { endpoint: stale } = await start({ keyFiles: [oldKey], tunnelConnect: [urlOf(worker)] });
    await waitFor(() => stale.views()[0].lastError === 'bad key');
    const { endpoint: fresh } = await start({ keyFiles: [newKey], tunnelConnect: [urlOf(worker)] });
    await waitFor(() => fresh.sessions().length === 1);

    // The dialing side reloads too: its next session authenticates with the new key.
    await relay.reload([newKey]);
    expect(relay.sessions()).toEqual([session]);
    await session.close('drop');
    await waitFor(() => relay.sessions().length === 1 && relay.sessions()[0] !== session);
    expect(await echo(relay.sessions()[0], 'new key')).toBe('new key');
  });

  it('reload with no files loads TUNNEL_KEY_FILE as started again', async () => {
    const key = await keyFile('k');
    const { endpoint: worker, lines } = await start({ keyFiles: [key], tunnelListen: LOOPBACK });
    await worker.reload();
    expect(lines.filter((l) => l.msg === 'tunnel key ring loaded')).toEqual([
      expect.objectContaining({ keys: [expect.any(String)] }),
    ]);
    const { endpoint: relay } = await start({ keyFiles: [key], tunnelConnect: [urlOf(worker)] });
    await waitFor(() => relay.sessions().length === 1);
  });

  it('close stops listening, stops dialing and ends every session', async () => {
    const key = await keyFile('k');
    const { endpoint: worker } = await start({ keyFiles: [key], tunnelListen: LOOPBACK });
    const port = worker.address()!.port;
    const { endpoint: relay } = await start({ keyFiles: [key], tunnelConnect: [urlOf(worker)] });
    await waitFor(() => worker.sessions().length === 1 && relay.sessions().length === 1);
    const accepted = worker.sessions()[0];
    const dialed = relay.sessions()[0];
    const ended = new Promise<string>((r) => dialed.once('close', r));

    await worker.close();
    expect(accepted.closeReason).toBe('closed: listener closing');
    // The peer's session ends too (by the CLOSE, or the socket's end if that comes first).
    expect(await ended).toMatch(/^peer closed: listener closing$|^connection lost$/);
    expect(worker.sessions()).toEqual([]);
    await expect(
      new Promise((resolve, reject) =>
        connect(port, '127.0.0.1').once('connect', resolve).once('error', reject),
      ),
    ).rejects.toThrow(/ECONNREFUSED/);

    // The dialing side: close ends its session and it dials no more.
    const { endpoint: again } = await start({
      keyFiles: [key],
      tunnelListen: { host: '127.0.0.1', port },
    });
    await waitFor(() => relay.sessions().length === 1);
    const second = relay.sessions()[0];
    await relay.close('relay stopping');
    expect(second.closeReason).toBe('closed: dialer stopping');
    expect(relay.sessions()).toEqual([]);
    await waitFor(() => again.sessions().length === 0);
    await new Promise((r) => setTimeout(r, 300));
    expect(again.sessions()).toEqual([]);
    expect(again.views()).toEqual([]);
  });
});
