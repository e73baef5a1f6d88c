import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { RelayClients, type RefusedReason } from '../../apps/relay/src/clients';
import { silentLogger } from '../../libs/config/src/logger';
import { serveTargets, type TunnelSession } from '../../libs/tunnel/src';
import { tunnelPair, waitFor, type Pair } from '../../libs/tunnel/src/testing/harness';

jest.setTimeout(20_000);

/** Sends `data` (if any) on a new connection; resolves with all it got back until the close. */
function exchange(port: number, data?: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
    if (data) s.write(data);
  });
}

/**
 * The relay's client handling (apps/relay/src/clients.ts) in front of a real tunnel session
 * whose worker side serves `api` with an in-process HTTP server, as the worker does.
 */
describe('relay clients on RELAY_LISTEN', () => {
  let pair: Pair;
  let api: HttpServer;
  let relay: Server;
  let port: number;
  let session: TunnelSession | undefined;
  const refused: RefusedReason[] = [];
  const held: Socket[] = [];

  beforeEach(async () => {
    refused.length = 0;
    // /hang never answers; anything else answers at once.
    api = createHttpServer((req, res) => {
      if (req.url !== '/hang') res.end('ok');
    });
    pair = await tunnelPair({
      listener: { maxStreams: 1 },
      onServer: (s) =>
        serveTargets(
          s,
          new Map([['api', { accept: (st: Duplex) => api.emit('connection', st) }]]),
          silentLogger(),
        ),
    });
    session = pair.client;
    const clients = new RelayClients({
      target: 'api',
      http: true,
      pool: { pick: () => session, whyDown: () => 'ws://gpu1:8080/: bad key' },
      log: silentLogger(),
      refused: (r) => refused.push(r),
      limits: { firstByteMs: 300, idleMs: 600, maxWaiting: 3 },
    });
    relay = createServer({ allowHalfOpen: true }, (s) => clients.accept(s));
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    port = (relay.address() as { port: number }).port;
  });

  afterEach(async () => {
    for (const s of held.splice(0)) s.destroy();
    relay.close();
    await pair.close();
    api.close();
  });

  it('opens the stream at the first byte: a silent connection holds none and goes at its deadline', async () => {
    const silent = exchange(port);
    await new Promise((r) => setTimeout(r, 100));
    expect(pair.client.openStreams).toBe(0);
    expect(await silent).toBe('');
    expect(refused).toEqual(['first byte timeout']);
    expect(await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(
      /^HTTP\/1\.1 200[^]*ok$/,
    );
  });

  it('past the cap of silent connections, closes the oldest of them, never the newcomer', async () => {
    const closed: number[] = [];
    for (let i = 0; i < 4; i++) {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      s.on('close', () => closed.push(i));
      held.push(s);
      await new Promise((r) => s.once('connect', r));
    }
    await waitFor(() => closed.length === 1);
    expect(closed).toEqual([0]);
    expect(refused).toEqual(['evicted']);
    expect(await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(
      /^HTTP\/1\.1 200/,
    );
  });

  it('answers an HTTP client 503 with the reason when no tunnel is up; a raw client is closed', async () => {
    session = undefined;
    const answer = await exchange(port, 'GET /test HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n/);
    expect(answer).toContain('Connection: close');
    expect(answer.split('\r\n\r\n')[1]).toBe(
      'gpu-sidecar relay: no tunnel to a worker is up (ws://gpu1:8080/: bad key)\n',
    );
    expect(await exchange(port, 'SSH-2.0-client\r\n')).toBe('');
    expect(refused).toEqual(['no tunnel', 'no tunnel']);
  });

  it('answers 503 when the worker refuses the stream, 502 when the tunnel ends before an answer', async () => {
    // The worker side takes one stream (maxStreams 1): one request that hangs holds it.
    const hanging = exchange(port, 'GET /hang HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(() => pair.server.openStreams === 1);
    const refusedAnswer = await exchange(port, 'GET /test HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(refusedAnswer).toMatch(/^HTTP\/1\.1 503 /);
    expect(refusedAnswer).toContain('the worker refused the connection: too many streams');
    expect(refused).toEqual(['stream refused']);
    // The tunnel goes while /hang waits for its answer.
    await pair.server.close('worker stopping');
    const lost = await hanging;
    expect(lost).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n/);
    expect(lost).toContain('the tunnel ended before the worker answered');
  });

  it('closes a connection silent both ways past the idle timeout, and the worker side with it', async () => {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    held.push(s);
    const closed = new Promise((r) => s.once('close', r));
    s.write('GET /hang HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(() => pair.server.openStreams === 1);
    await closed;
    expect(refused).toEqual(['idle timeout']);
    await waitFor(() => pair.server.openStreams === 0 && pair.client.openStreams === 0);
  });

  /** A second relay listener on the same session, with a long idle timeout and a short FIN wait. */
  async function finWaitRelay(): Promise<{ relay2: Server; port2: number }> {
    const clients = new RelayClients({
      target: 'api',
      http: true,
      pool: { pick: () => session, whyDown: () => 'down' },
      log: silentLogger(),
      refused: (r) => refused.push(r),
      limits: { firstByteMs: 300, idleMs: 15_000, finWaitMs: 300 },
    });
    const relay2 = createServer({ allowHalfOpen: true }, (c) => clients.accept(c));
    await new Promise<void>((r) => relay2.listen(0, '127.0.0.1', r));
    return { relay2, port2: (relay2.address() as { port: number }).port };
  }

  it('closes a client that stays silent once the worker ended its side, and its stream id is free again', async () => {
    // The API ends an idle keep-alive connection (a FIN, relayed to the client); the client
    // keeps its side open and says nothing. Until it closes, the stream's id stays taken on
    // both ends, and the worker side takes one stream here (maxStreams 1).
    api.keepAliveTimeout = 200;
    const { relay2, port2 } = await finWaitRelay();
    try {
      const s = connect({ port: port2, host: '127.0.0.1', allowHalfOpen: true });
      s.on('error', () => undefined);
      held.push(s);
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString()));
      const ended = new Promise((r) => s.once('end', r));
      s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      await ended;
      expect(got).toMatch(/^HTTP\/1\.1 200[^]*ok$/);
      // The relay closes it within its FIN wait (300 ms), far before the idle timeout (15 s),
      // and resets the stream: the id is free, and the next request gets the one stream. (The
      // client, half-open, sees nothing more: it had the FIN already.)
      await new Promise((r) => setTimeout(r, 1_000));
      expect(refused).toEqual([]);
      expect(
        await exchange(port2, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
      ).toMatch(/^HTTP\/1\.1 200[^]*ok$/);
    } finally {
      relay2.close();
    }
  });

  it('keeps a client that reads slowly after the worker ended: its answer arrives whole', async () => {
    const big = 'x'.repeat(8 * 1024 * 1024);
    api.removeAllListeners('request');
    api.on('request', (_req, res) => res.end(big));
    const { relay2, port2 } = await finWaitRelay();
    try {
      const s = connect({ port: port2, host: '127.0.0.1' });
      s.on('error', () => undefined);
      held.push(s);
      let got = 0;
      s.on('data', (d: Buffer) => (got += d.length));
      const closed = new Promise((r) => s.once('close', r));
      s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      // Not reading for longer than the FIN wait, several times, while the answer is in flight.
      for (let i = 0; i < 3; i++) {
        s.pause();
        await new Promise((r) => setTimeout(r, 700));
        s.resume();
        await new Promise((r) => setTimeout(r, 20));
      }
      await closed;
      expect(got).toBeGreaterThan(big.length);
    } finally {
      relay2.close();
    }
  });
});

/**
 * RELAY_FORWARDS listeners (raw TCP): a forward whose client speaks first opens its stream at
 * the first byte, as RELAY_LISTEN does; one listed in RELAY_FORWARDS_SERVER_FIRST opens it at
 * the accept. Both have the first-byte and idle deadlines and the cap of waiting connections.
 */
describe('relay clients on a RELAY_FORWARDS listener', () => {
  let pair: Pair;
  const refused: RefusedReason[] = [];
  const held: Socket[] = [];
  const relays: Server[] = [];
  /** Connections the worker side made to each target. */
  const reached = { echo: 0, banner: 0 };

  /** A forward listener to `target` on a random port; its port. */
  async function forward(
    target: 'echo' | 'banner',
    serverFirst: boolean,
    idleMs = 600,
    maxWaiting = 3,
  ): Promise<number> {
    const clients = new RelayClients({
      target,
      http: false,
      serverFirst,
      pool: { pick: () => pair.client, whyDown: () => 'down' },
      log: silentLogger(),
      refused: (r) => refused.push(r),
      limits: { firstByteMs: 300, idleMs, maxWaiting },
    });
    const relay = createServer({ allowHalfOpen: true }, (s) => clients.accept(s));
    relays.push(relay);
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    return (relay.address() as { port: number }).port;
  }

  /**
   * A connection to `port` that sends nothing (and reads, so that it sees the relay's close
   * after a banner), kept in `held`; resolves once connected.
   */
  async function silent(port: number, onClose?: () => void, from?: string): Promise<Socket> {
    const s = connect({ port, host: '127.0.0.1', localAddress: from });
    s.on('error', () => undefined);
    s.resume();
    if (onClose) s.on('close', onClose);
    held.push(s);
    await new Promise((r) => s.once('connect', r));
    return s;
  }

  beforeEach(async () => {
    refused.length = 0;
    reached.echo = reached.banner = 0;
    pair = await tunnelPair({
      onServer: (s) =>
        serveTargets(
          s,
          new Map([
            // echo: answers what it is sent (the client speaks first).
            [
              'echo',
              {
                accept: (st: Duplex) => {
                  reached.echo++;
                  st.pipe(st);
                },
              },
            ],
            // banner: speaks first, then echoes (as MySQL, SMTP).
            [
              'banner',
              {
                accept: (st: Duplex) => {
                  reached.banner++;
                  st.write('220 hello\r\n');
                  st.pipe(st);
                },
              },
            ],
          ]),
          silentLogger(),
        ),
    });
  });

  afterEach(async () => {
    for (const s of held.splice(0)) s.destroy();
    for (const r of relays.splice(0)) r.close();
    await pair.close();
  });

  it('opens no stream for a silent connection, closes it at its first-byte deadline, and carries the next', async () => {
    const port = await forward('echo', false);
    const closed = new Promise((r) => void silent(port, () => r(undefined)));
    await new Promise((r) => setTimeout(r, 100));
    expect(pair.client.openStreams).toBe(0);
    await closed;
    expect(refused).toEqual(['first byte timeout']);
    expect(reached.echo).toBe(0);
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const back = new Promise<string>((resolve) => {
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString()));
      s.on('end', () => resolve(got));
    });
    s.end('ping');
    expect(await back).toBe('ping');
    s.destroy();
    expect(reached.echo).toBe(1);
  });

  it('past the cap of silent connections, closes the oldest of them, never the newcomer', async () => {
    const port = await forward('echo', false);
    const closed: number[] = [];
    for (let i = 0; i < 4; i++) await silent(port, () => closed.push(i));
    await waitFor(() => closed.length === 1);
    expect(closed).toEqual([0]);
    expect(refused).toEqual(['evicted']);
    expect(pair.client.openStreams).toBe(0);
  });

  it('a server-first forward opens the stream at the accept: the banner comes, silence is bounded', async () => {
    // 4 waiting at most, 2 of them from one address (SERVER_FIRST_ADDRESS_SHARE).
    const port = await forward('banner', true, 1_500, 4);
    // A client that reads the banner and answers is carried past the first-byte deadline (the
    // banner crosses the tunnel after the connect, when its listener is in place).
    const talker = await silent(port);
    let got = '';
    talker.on('data', (d: Buffer) => (got += d.toString()));
    await waitFor(() => got === '220 hello\r\n');
    talker.write('EHLO x\r\n');
    await waitFor(() => got.endsWith('EHLO x\r\n'));
    // Four more from the same address that never answer the banner: the first two hold a
    // stream each until their deadline; the next two are past that address's share and are
    // closed at the accept, before they cost a stream (or a connection to the target).
    const closed: number[] = [];
    for (let i = 0; i < 4; i++) await silent(port, () => closed.push(i));
    await waitFor(() => closed.length === 2);
    expect(closed.sort()).toEqual([2, 3]);
    // A client of another address still finds room, and its greeting, while they wait.
    const other = await silent(port, undefined, '127.0.0.2');
    let otherGot = '';
    other.on('data', (d: Buffer) => (otherGot += d.toString()));
    await waitFor(() => otherGot === '220 hello\r\n');
    other.destroy();
    await waitFor(() => closed.length === 4);
    expect(refused.sort()).toEqual([
      'evicted',
      'evicted',
      'first byte timeout',
      'first byte timeout',
    ]);
    // The talker, the two that waited and the other address's client: 4 target connections.
    expect(reached.banner).toBe(4);
    expect(talker.destroyed).toBe(false);
    await waitFor(() => pair.server.openStreams === 1);
    // Then silent both ways past the idle timeout: closed, and its stream with it.
    await waitFor(() => talker.destroyed, 3_000);
    expect(refused).toContain('idle timeout');
    await waitFor(() => pair.server.openStreams === 0 && pair.client.openStreams === 0);
  });
});
