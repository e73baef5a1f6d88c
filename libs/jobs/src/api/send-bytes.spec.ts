import { once } from 'node:events';
import { open, mkdtemp, writeFile, truncate } from 'node:fs/promises';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sendBytes } from './send-bytes';

/** A file of `size` bytes, and a server that sends it with sendBytes (`stallMs`). */
async function serveFile(size: number, stallMs: number, before?: (file: string) => Promise<void>) {
  const dir = await mkdtemp(path.join(tmpdir(), 'gsc-send-'));
  const file = path.join(dir, 'f.bin');
  await writeFile(file, Buffer.alloc(size, 0x62));
  const sent: { res?: ServerResponse; done?: Promise<void>; closed: boolean } = { closed: false };
  const server = createServer((_req, res) => {
    void (async () => {
      const handle = await open(file, 'r');
      const stat = await handle.stat();
      await before?.(file);
      handle.close = ((orig) => async () => {
        sent.closed = true;
        return orig();
      })(handle.close.bind(handle));
      res.writeHead(200, { 'Content-Length': String(stat.size) });
      sent.res = res;
      sent.done = sendBytes({ handle, stat }, 0, stat.size - 1, res, stallMs);
    })();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = async (): Promise<Socket> => {
    const s = connect((server.address() as AddressInfo).port, '127.0.0.1');
    await once(s, 'connect');
    s.write('GET /f HTTP/1.1\r\nHost: x\r\n\r\n');
    return s;
  };
  return { server, sent, client };
}

async function waitFor(check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('sendBytes', () => {
  let server: Server | undefined;
  afterEach(() => {
    server?.closeAllConnections();
    server?.close();
  });

  it('sends the whole file to a client that reads, and closes it', async () => {
    const s = await serveFile(3 * 1024 * 1024 + 17, 1_000);
    server = s.server;
    const c = await s.client();
    let got = 0;
    c.on('data', (d: Buffer) => (got += d.length));
    await waitFor(() => s.sent.done !== undefined);
    await s.sent.done;
    await waitFor(() => got >= 3 * 1024 * 1024 + 17);
    expect(s.sent.res!.writableFinished).toBe(true);
    expect(s.sent.closed).toBe(true);
    c.destroy();
  });

  it('cuts a client that stopped reading once nothing moved for the stall time, and closes the file', async () => {
    const s = await serveFile(64 * 1024 * 1024, 300);
    server = s.server;
    const c = await s.client();
    c.pause();
    await waitFor(() => s.sent.done !== undefined);
    await new Promise((r) => setTimeout(r, 100));
    expect(s.sent.res!.destroyed).toBe(false);
    await waitFor(() => s.sent.res!.destroyed, 5_000);
    await s.sent.done;
    expect(s.sent.closed).toBe(true);
    c.destroy();
  });

  it('cuts a client that trickles (1 KB at a time) slower than a chunk per stall time', async () => {
    const s = await serveFile(64 * 1024 * 1024, 500);
    server = s.server;
    const c = await s.client();
    c.pause();
    await waitFor(() => s.sent.done !== undefined);
    const trickle = setInterval(() => c.read(1024), 100);
    try {
      await waitFor(() => s.sent.res!.destroyed, 10_000);
    } finally {
      clearInterval(trickle);
    }
    c.destroy();
  });

  it('cuts the connection when the file shrank, rather than send less than promised', async () => {
    const s = await serveFile(1024 * 1024, 1_000, (f) => truncate(f, 1000));
    server = s.server;
    const c = await s.client();
    c.on('data', () => undefined);
    await waitFor(() => s.sent.done !== undefined);
    await s.sent.done;
    expect(s.sent.res!.destroyed).toBe(true);
    expect(s.sent.closed).toBe(true);
    c.destroy();
  });
});
