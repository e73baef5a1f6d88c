import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { connect, createServer as createTcpServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { silentLogger } from '../../libs/config/src/logger';
import {
  LONE_STREAM_WINDOW,
  serveTargets,
  splice,
  STREAM_WINDOW,
  type TunnelStream,
} from '../../libs/tunnel/src';
import { tcpServer, tunnelPair, waitFor, type Pair } from '../../libs/tunnel/src/testing/harness';

jest.setTimeout(30_000);

/** Reads a stream to its end. */
async function collect(stream: Duplex): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A readable that yields `total` pseudo-random bytes in 64 KiB chunks, lazily. */
function source(
  total: number,
  hash?: ReturnType<typeof createHash>,
): Readable & { produced(): number } {
  const block = randomBytes(64 * 1024);
  let sent = 0;
  return Object.assign(
    new Readable({
      read() {
        if (sent >= total) return void this.push(null);
        const n = Math.min(block.length, total - sent);
        const chunk = Buffer.from(block.subarray(0, n));
        chunk[0] = sent & 0xff;
        hash?.update(chunk);
        sent += n;
        this.push(chunk);
      },
    }),
    { produced: () => sent },
  );
}

describe('tunnel streams over real loopback sockets', () => {
  let pair: Pair;
  let echo: Awaited<ReturnType<typeof tcpServer>>;

  beforeEach(async () => {
    echo = await tcpServer();
    pair = await tunnelPair({
      onServer: (s) =>
        serveTargets(
          s,
          new Map([['echo', { host: '127.0.0.1', port: echo.port }]]),
          silentLogger(),
        ),
    });
  });

  const afterThis: (() => void)[] = [];
  afterEach(async () => {
    for (const f of afterThis.splice(0)) f();
    await pair.close();
    await echo.close();
  });

  it('echoes bytes through a stream to a named target', async () => {
    const stream = pair.client.openStream('echo');
    stream.end('hello tunnel');
    expect((await collect(stream)).toString()).toBe('hello tunnel');
  });

  it('carries 64 MiB intact (sha256 of what was sent equals sha256 of what came back)', async () => {
    const sent = createHash('sha256');
    const got = createHash('sha256');
    const stream = pair.client.openStream('echo');
    let bytes = 0;
    await Promise.all([
      pipeline(source(64 * 1024 * 1024, sent), stream),
      (async () => {
        for await (const c of stream) {
          got.update(c as Buffer);
          bytes += (c as Buffer).length;
        }
      })(),
    ]);
    expect(bytes).toBe(64 * 1024 * 1024);
    expect(got.digest('hex')).toBe(sent.digest('hex'));
  });

  it('runs 200 concurrent streams, each getting back exactly its own bytes', async () => {
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const payload = randomBytes(10_000 + i);
        const stream = pair.client.openStream('echo');
        stream.end(payload);
        return (await collect(stream)).equals(payload);
      }),
    );
    expect(results.every(Boolean)).toBe(true);
    expect(pair.server.openStreams).toBeLessThanOrEqual(200);
  });

  it('keeps half-close: the target still answers after the client finished writing', async () => {
    const delayed = await tcpServer((s) => {
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () =>
        setTimeout(() => s.end(Buffer.concat(chunks).toString().toUpperCase()), 50),
      );
    });
    const other = await tunnelPair({
      onServer: (s) =>
        serveTargets(
          s,
          new Map([['up', { host: '127.0.0.1', port: delayed.port }]]),
          silentLogger(),
        ),
    });
    const stream = other.client.openStream('up');
    stream.end('half closed');
    expect((await collect(stream)).toString()).toBe('HALF CLOSED');
    await other.close();
    await delayed.close();
  });

  it('hands streams to an in-process HTTP server as its connections (LocalTarget)', async () => {
    // What the worker does with target `api`: no TCP connection, the server reads the stream.
    const server = createServer((req, res) => res.end(`ok ${req.url}`));
    server.keepAliveTimeout = 300;
    const other = await tunnelPair({
      onServer: (s) =>
        serveTargets(
          s,
          new Map([['api', { accept: (stream: Duplex) => server.emit('connection', stream) }]]),
          silentLogger(),
        ),
    });
    try {
      // Two requests on one keep-alive connection, answered in order.
      const stream = other.client.openStream('api');
      stream.write('GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\n');
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      const t0 = Date.now();
      // The server's keep-alive timeout reaches the stream through TunnelStream.setTimeout:
      // the server destroys the idle connection, as it would a socket on a port, and the
      // client's end of the stream ends as a socket's would: FIN, not a reset.
      let reset: string | undefined;
      stream.on('error', (err: Error & { reason?: string }) => (reset = err.reason));
      await new Promise<void>((resolve, reject) => {
        stream.once('end', resolve);
        setTimeout(() => reject(new Error('idle keep-alive connection never closed')), 5000);
      });
      stream.end();
      await new Promise((r) => stream.once('close', r));
      expect(reset).toBeUndefined();
      const text = Buffer.concat(chunks).toString();
      expect(text.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(2);
      expect(text.indexOf('ok /one')).toBeGreaterThan(0);
      expect(text.indexOf('ok /two')).toBeGreaterThan(text.indexOf('ok /one'));
      expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
      await waitFor(() => other.server.openStreams === 0 && other.client.openStreams === 0);
    } finally {
      await other.close();
      server.close();
    }
  });

  it('lets streams be opened by the listening side too (reverse direction)', async () => {
    pair.client.on('stream', (_t: string, s: Duplex) => s.pipe(s));
    const stream = pair.server.openStream('anything');
    stream.end('reverse');
    expect((await collect(stream)).toString()).toBe('reverse');
  });

  it('stalls only the stream whose reader stopped while 1 GiB is offered, its buffer never above one window', async () => {
    const stalled = pair.client.openStream('echo');
    stalled.pause();
    let maxBuffered = 0;
    const watch = setInterval(
      () => (maxBuffered = Math.max(maxBuffered, stalled.readableLength)),
      1,
    );
    const src = source(1024 * 1024 * 1024);
    const writer = pipeline(src, stalled).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    const other = pair.client.openStream('echo');
    other.end('still flowing');
    expect((await collect(other)).toString()).toBe('still flowing');
    clearInterval(watch);
    expect(stalled.readableLength).toBeLessThanOrEqual(STREAM_WINDOW);
    expect(maxBuffered).toBeLessThanOrEqual(STREAM_WINDOW);
    // Of the 1 GiB offered, only windows and socket buffers along the echo path were taken.
    expect(src.produced()).toBeLessThan(32 * 1024 * 1024);
    stalled.destroy();
    await writer;
  });

  it('splice: a client socket that stops reading holds its stream to one window, then gets every byte and the end', async () => {
    // A relay's shape: each connection to `front` is spliced to a stream to the echo target.
    let stream: TunnelStream | undefined;
    let front: Socket | undefined;
    const server = createTcpServer({ allowHalfOpen: true }, (c) => {
      front = c;
      stream = pair.client.openStream('echo');
      stream.on('error', () => undefined); // reset at the end of the test
      splice(stream, c);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const client = connect({ port, host: '127.0.0.1' });
    afterThis.push(
      () => client.destroy(),
      () => server.close(),
    );
    client.pause();
    const sent = createHash('sha256');
    // Far more than every socket buffer along the path can take (loopback grows them to MBs).
    const total = 256 * 1024 * 1024;
    const src = source(total, sent);
    const writing = pipeline(src, client).catch(() => undefined);
    let maxBuffered = 0;
    let maxQueued = 0;
    const watch = setInterval(() => {
      maxBuffered = Math.max(maxBuffered, stream?.readableLength ?? 0);
      maxQueued = Math.max(maxQueued, front?.writableLength ?? 0);
    }, 1);
    await new Promise((r) => setTimeout(r, 800));
    // Stalled: what the echo sent back waits in the stream's buffer, within its window, and
    // the socket's own queue stays small (nothing written past its 'false').
    expect(stream!.readableLength).toBeGreaterThan(0);
    const stalledAt = src.produced();
    expect(stalledAt).toBeLessThan(total);
    const got = createHash('sha256');
    let received = 0;
    for await (const c of client) {
      got.update(c as Buffer);
      received += (c as Buffer).length;
    }
    clearInterval(watch);
    await writing;
    expect(received).toBe(total);
    expect(got.digest('hex')).toBe(sent.digest('hex'));
    // A lone stream's window grew while the socket's kernel buffers took everything: its bound.
    expect(maxBuffered).toBeLessThanOrEqual(LONE_STREAM_WINDOW);
    expect(maxQueued).toBeLessThanOrEqual(256 * 1024);
  });
});
