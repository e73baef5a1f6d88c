import { mkdtempSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { silentLogger } from '../../libs/config/src/logger';
import {
  listenTunnel,
  TunnelDialer,
  type TunnelDialerOptions,
  type TunnelListener,
  type TunnelSession,
} from '../../libs/tunnel/src';
import { randomRing, selfSignedCert, waitFor } from '../../libs/tunnel/src/testing/harness';

jest.setTimeout(20_000);

/** A minimal HTTP CONNECT proxy that counts the tunnels it opens. */
async function connectProxy(): Promise<{
  port: number;
  connects: string[];
  close(): Promise<void>;
}> {
  const connects: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer();
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    connects.push(req.url ?? '');
    const [host, port] = (req.url ?? '').split(':');
    const upstream = connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client).pipe(upstream);
    });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const close = (): Promise<void> =>
    new Promise((r) => (sockets.forEach((s) => s.destroy()), server.close(() => r())));
  return { port, connects, close };
}

/** A self-signed certificate for localhost / 127.0.0.1. */
const selfSigned = () => selfSignedCert(mkdtempSync(join(tmpdir(), 'tunnel-tls-')));

/** Dials `url` with `extra` options and echoes one message through a stream. */
async function echoThrough(
  listener: TunnelListener,
  keys: ReturnType<typeof randomRing>,
  url: string,
  extra: Partial<TunnelDialerOptions>,
): Promise<string> {
  let session: TunnelSession | undefined;
  const dialer = new TunnelDialer({
    url,
    keys,
    logger: silentLogger(),
    onSession: (s) => (session = s),
    ...extra,
  });
  dialer.start();
  await waitFor(() => session !== undefined);
  const stream = session!.openStream('echo');
  stream.end('through');
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  await dialer.stop();
  expect(listener.sessions.size).toBeLessThanOrEqual(1);
  return Buffer.concat(chunks).toString();
}

describe('tunnel transports', () => {
  const keys = randomRing();
  const echoStreams = (s: TunnelSession): void =>
    void s.on('stream', (_t: string, st: Duplex) => st.pipe(st));

  it('dials through an HTTP CONNECT proxy (HTTPS_PROXY)', async () => {
    const proxy = await connectProxy();
    const listener = await listenTunnel({
      host: '127.0.0.1',
      port: 0,
      keys,
      logger: silentLogger(),
      onSession: echoStreams,
    });
    const port = listener.address().port;
    expect(
      await echoThrough(listener, keys, `ws://127.0.0.1:${port}/`, {
        proxy: `http://127.0.0.1:${proxy.port}`,
      }),
    ).toBe('through');
    expect(proxy.connects).toEqual([`127.0.0.1:${port}`]);
    await listener.close();
    await proxy.close();
  });

  it('serves wss:// with a certificate and verifies it with the given CA', async () => {
    const tls = selfSigned();
    const listener = await listenTunnel({
      host: '127.0.0.1',
      port: 0,
      keys,
      tls,
      logger: silentLogger(),
      onSession: echoStreams,
    });
    const url = `wss://localhost:${listener.address().port}/`;
    expect(await echoThrough(listener, keys, url, { tlsCa: tls.cert })).toBe('through');
    await listener.close();
  });

  it('runs wss:// inside an HTTP CONNECT proxy', async () => {
    const tls = selfSigned();
    const proxy = await connectProxy();
    const listener = await listenTunnel({
      host: '127.0.0.1',
      port: 0,
      keys,
      tls,
      logger: silentLogger(),
      onSession: echoStreams,
    });
    const url = `wss://localhost:${listener.address().port}/`;
    expect(
      await echoThrough(listener, keys, url, {
        tlsCa: tls.cert,
        proxy: `http://127.0.0.1:${proxy.port}`,
      }),
    ).toBe('through');
    expect(proxy.connects).toHaveLength(1);
    await listener.close();
    await proxy.close();
  });

  it('answers GET /health on the tunnel port for load balancers', async () => {
    const listener = await listenTunnel({
      host: '127.0.0.1',
      port: 0,
      keys,
      logger: silentLogger(),
      onSession: () => undefined,
    });
    const res = await fetch(`http://127.0.0.1:${listener.address().port}/health`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('ok\n');
    await listener.close();
  });

  it('closes silent and slow connections at the one deadline from accept, and evicts the oldest past the cap', async () => {
    let sessions = 0;
    const listener = await listenTunnel({
      host: '127.0.0.1',
      port: 0,
      keys,
      logger: silentLogger(),
      onSession: (s) => {
        sessions++;
        echoStreams(s);
      },
      handshakeTimeoutMs: 2_500,
      maxPending: 20,
    });
    const port = listener.address().port;
    const closedAt: (number | undefined)[] = [];
    const t0 = Date.now();
    const open = (send?: string): Promise<Socket> =>
      new Promise((resolve) => {
        const i = closedAt.push(undefined) - 1;
        const sock = connect(port, '127.0.0.1', () => {
          if (send) sock.write(send);
          resolve(sock);
        });
        sock.on('error', () => undefined);
        sock.on('close', () => (closedAt[i] = Date.now() - t0));
      });
    // Silent sockets, then sockets that start a request but never finish its headers.
    await Promise.all(Array.from({ length: 10 }, () => open()));
    await Promise.all(Array.from({ length: 10 }, () => open('GET / HTTP/1.1\r\nHost: x\r\n')));
    // The cap is full: a newcomer is taken, and the oldest (a silent one) goes at once.
    await open();
    await waitFor(() => closedAt[0] !== undefined, 2_000);
    expect(closedAt.slice(1).every((c) => c === undefined)).toBe(true);
    expect(listener.pending).toBe(20);
    // A real dialer gets a session while they are all still there.
    expect(await echoThrough(listener, keys, `ws://127.0.0.1:${port}`, {})).toBe('through');
    expect(sessions).toBe(1);
    // The others are closed by the deadline, 2.5 s after their accept, not later.
    await waitFor(() => closedAt.every((c) => c !== undefined), 8_000);
    expect(Math.max(...(closedAt as number[]))).toBeLessThan(2_500 + 2_000);
    expect(listener.pending).toBe(0);
    await listener.close();
  });
});
