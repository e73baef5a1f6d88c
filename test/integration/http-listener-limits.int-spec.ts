import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { boundHttpListener } from '../../libs/tunnel/src';

/** boundHttpListener on a real HTTP server and real sockets (the daemons' ADMIN_LISTEN and API_LISTEN). */
describe('boundHttpListener', () => {
  let server: Server;
  let port: number;
  const sockets: Socket[] = [];

  beforeEach(async () => {
    server = createServer((_req, res) => res.end('ok'));
    server.keepAliveTimeout = 5_000;
    boundHttpListener(server, {
      maxConnections: 64,
      fileShare: 1,
      maxWaiting: 3,
      firstRequestMs: 300,
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  /** A connection to the server; `closedAt()` is when the server closed it (ms), if it did. */
  async function open(): Promise<{ socket: Socket; closedAt(): number | undefined }> {
    const t0 = performance.now();
    let closed: number | undefined;
    const socket = connect(port, '127.0.0.1');
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => (closed = performance.now() - t0));
    await new Promise((r) => socket.once('connect', r));
    return { socket, closedAt: () => closed };
  }

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('closes a connection that sends no request head within the deadline, and keeps one that did', async () => {
    const silent = await open();
    const talker = await open();
    let answer = '';
    talker.socket.on('data', (d: Buffer) => (answer += d.toString()));
    talker.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await sleep(800);
    expect(silent.closedAt()).toBeGreaterThanOrEqual(250);
    expect(silent.closedAt()).toBeLessThan(800);
    // Answered, and still open: after its first request it is the server's (keep-alive 5 s).
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    expect(talker.closedAt()).toBeUndefined();
  });

  it('past maxWaiting closes the oldest silent connection, never the newcomer', async () => {
    const conns = [];
    for (let i = 0; i < 4; i++) conns.push(await open());
    await sleep(100);
    expect(conns.map((c) => c.closedAt() !== undefined)).toEqual([true, false, false, false]);
  });

  it('leaves alone the streams handed to the server that are not TCP sockets (the tunnel)', async () => {
    const stream = new PassThrough() as PassThrough & { remoteAddress?: string };
    server.emit('connection', stream);
    await sleep(500);
    expect(stream.destroyed).toBe(false);
    stream.destroy();
  });

  it('caps the connections', () => {
    expect(server.maxConnections).toBe(64);
  });
});
