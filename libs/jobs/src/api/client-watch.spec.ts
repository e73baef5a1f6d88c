import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { ClientWatch } from './client-watch';

/**
 * A real HTTP server (half-open connections allowed, as the worker's) whose one route hands its
 * request to `onRequest`; and a raw client socket that sent a GET to it.
 */
async function serve(
  onRequest: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ server: Server; client: () => Promise<Socket> }> {
  const server = createServer(onRequest);
  (server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    server,
    client: async () => {
      const s = connect(port, '127.0.0.1');
      await once(s, 'connect');
      s.write('GET /x HTTP/1.1\r\nHost: x\r\n\r\n');
      return s;
    },
  };
}

/** Resolves with the watch of the next request, once its handler ran. */
function nextWatch(watches: ClientWatch[], n: number): Promise<ClientWatch> {
  return new Promise((resolve) => {
    const check = () => (watches.length >= n ? resolve(watches[n - 1]) : setTimeout(check, 5));
    check();
  });
}

describe('ClientWatch', () => {
  let server: Server | undefined;
  afterEach(() => {
    server?.closeAllConnections();
    server?.close();
  });

  it('sees the client go when it closes, and when it only half-closes (FIN)', async () => {
    const watches: ClientWatch[] = [];
    const gone: string[] = [];
    const s = await serve((req, res) => {
      res.writeHead(200);
      const w = new ClientWatch(req, res);
      w.whenGone(() => gone.push(req.url ?? ''));
      watches.push(w);
    });
    server = s.server;
    const closing = await s.client();
    const w1 = await nextWatch(watches, 1);
    expect(w1.left).toBe(false);
    closing.destroy();
    await waitFor(() => w1.left);
    const halfClosing = await s.client();
    const w2 = await nextWatch(watches, 2);
    halfClosing.end();
    await waitFor(() => w2.left);
    expect(gone).toEqual(['/x', '/x']);
  });

  it('does not wait for drain that is asked for after the client went', async () => {
    // A follower's client half-closed (FIN) while it was reading the log; its next write found
    // the socket full and it waited for 'drain', after the wake-up of the waits: forever (the
    // connection stays half-open, and a later close wakes nothing twice). It held the job's log
    // open: the full attack run left 30 descriptors after 5 s. Fakes, to order the events.
    const socket = Object.assign(new EventEmitter(), { readableEnded: false, destroyed: false });
    const res = Object.assign(new EventEmitter(), {
      destroyed: false,
      writableEnded: false,
      writableNeedDrain: false,
      write: () => {
        res.writableNeedDrain = true;
        return false;
      },
      destroy: () => undefined,
    });
    const w = new ClientWatch(
      { socket } as unknown as IncomingMessage,
      res as unknown as ServerResponse,
    );
    socket.emit('end'); // the client's FIN
    expect(w.left).toBe(true);
    expect(w.write(Buffer.alloc(1))).toBe(false); // still half-open: written, not yet taken
    const outcome = await Promise.race([
      w.drain().then(() => 'resolved'),
      new Promise((r) => setTimeout(() => r('still waiting'), 200)),
    ]);
    expect(outcome).toBe('resolved');
    w.dispose();
  });

  it('ends a sleep and a wait for drain as soon as the client goes', async () => {
    const results: string[] = [];
    const s = await serve((req, res) => {
      res.writeHead(200);
      const w = new ClientWatch(req, res, 60_000, Infinity);
      // Fill the socket until a write says "wait"; the client never reads.
      const big = Buffer.alloc(1024 * 1024);
      while (w.write(big));
      void Promise.all([w.drain(), w.sleep(60_000)]).then(() => results.push('woken'));
    });
    server = s.server;
    const c = await s.client();
    c.pause();
    await new Promise((r) => setTimeout(r, 100));
    expect(results).toEqual([]);
    c.destroy();
    await waitFor(() => results.length === 1);
  });

  it('cuts a client that takes nothing for the stall time', async () => {
    let res: ServerResponse | undefined;
    const s = await serve((req, r) => {
      res = r;
      r.writeHead(200);
      const w = new ClientWatch(req, r, 300, Infinity);
      const big = Buffer.alloc(1024 * 1024);
      // Keeps writing whenever the socket takes more, until the kernel's buffers are full too.
      const pump = async () => {
        while (!r.destroyed) {
          while (w.write(big));
          await w.drain();
        }
      };
      void pump();
    });
    server = s.server;
    const c = await s.client();
    c.pause();
    await waitFor(() => res !== undefined);
    expect(res!.destroyed).toBe(false);
    await waitFor(() => res!.destroyed, 5_000);
    c.destroy();
  });

  it('cuts a client at once when more than maxBuffered bytes wait for it, before the stall time', async () => {
    let res: ServerResponse | undefined;
    let written = 0;
    const s = await serve((req, r) => {
      res = r;
      r.writeHead(200);
      const w = new ClientWatch(req, r, 60_000, 256 * 1024);
      // Writes on without waiting for drain (as an event stream did): 64 KiB every 5 ms.
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const t = setInterval(() => {
        if (r.destroyed) return clearInterval(t);
        w.write(chunk);
        written += chunk.length;
      }, 5);
    });
    server = s.server;
    const c = await s.client();
    c.pause();
    await waitFor(() => res?.destroyed === true, 10_000);
    // Cut with at most the cap waiting in the response, besides what the kernel buffers hold.
    expect(res!.writableLength).toBeLessThanOrEqual(256 * 1024 + 64 * 1024);
    expect(written).toBeGreaterThan(256 * 1024);
    c.destroy();
  });

  it('never cuts a client that reads, however much it is sent', async () => {
    let res: ServerResponse | undefined;
    const s = await serve((req, r) => {
      res = r;
      r.writeHead(200);
      const w = new ClientWatch(req, r, 60_000, 256 * 1024);
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      void (async () => {
        for (let i = 0; i < 256 && !r.destroyed; i++) if (!w.write(chunk)) await w.drain();
        r.end();
      })();
    });
    server = s.server;
    const c = await s.client();
    let got = 0;
    c.on('data', (d: Buffer) => (got += d.length));
    await waitFor(() => res?.writableFinished === true, 10_000);
    expect(res!.destroyed && !res!.writableFinished).toBe(false);
    await waitFor(() => got > 256 * 64 * 1024);
    c.destroy();
  });

  it('leaves no listener on a kept-alive socket once disposed', async () => {
    let sock: Socket | undefined;
    let before = 0;
    const s = await serve((req, res) => {
      sock = req.socket;
      before = req.socket.listenerCount('end');
      const w = new ClientWatch(req, res);
      w.dispose();
      res.end('ok');
    });
    server = s.server;
    const c = await s.client();
    await waitFor(() => sock !== undefined);
    expect(sock!.listenerCount('end')).toBe(before);
    c.destroy();
  });
});

async function waitFor(check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('not within ' + ms + ' ms');
    await new Promise((r) => setTimeout(r, 10));
  }
}
