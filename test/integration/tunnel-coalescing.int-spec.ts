import { Agent, createServer as createHttpServer } from 'node:http';
import { connect, type NetConnectOpts, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { MessageChannel } from '../../libs/tunnel/src/transport/channel';
import { dialWebSocket, UpgradeAcceptor } from '../../libs/tunnel/src/transport/ws-adapter';

jest.setTimeout(20_000);

/**
 * Write coalescing in the ws adapter (docs/PROTOCOL.md, "Write coalescing"): every message sent
 * in one event-loop turn leaves in one write to the socket, in both directions. Each end's TCP
 * socket is watched where a Writable hands data to the kernel (_write and _writev, the stream
 * implementer's API): a burst of 20 messages in one turn is one call. Without the cork, ws
 * writes each message on its own (20 calls).
 */
function countWrites(socket: Duplex): { n: number } {
  const count = { n: 0 };
  const s = socket as Duplex & Record<'_write' | '_writev', (...a: unknown[]) => unknown>;
  for (const m of ['_write', '_writev'] as const) {
    const orig = s[m].bind(s);
    s[m] = (...args: unknown[]) => {
      count.n++;
      return orig(...args);
    };
  }
  return count;
}

/** An HTTP agent that hands out the sockets it makes, so the test can watch the dialer's. */
class WatchedAgent extends Agent {
  readonly sockets_: Socket[] = [];
  override createConnection(opts: NetConnectOpts): Duplex {
    const s = connect(opts);
    this.sockets_.push(s);
    return s;
  }
}

function collect(channel: MessageChannel): Buffer[] {
  const got: Buffer[] = [];
  channel.setMessageHandler((data) => got.push(Buffer.from(data)));
  return got;
}

async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('ws adapter write coalescing', () => {
  const acceptor = new UpgradeAcceptor();
  const agent = new WatchedAgent();
  let http: ReturnType<typeof createHttpServer>;
  let server: MessageChannel;
  let client: MessageChannel;
  let serverWrites: { n: number };
  let clientWrites: { n: number };

  beforeAll(async () => {
    http = createHttpServer();
    const accepted = new Promise<MessageChannel>((resolve) =>
      http.on('upgrade', (req, socket, head) => {
        serverWrites = countWrites(socket);
        acceptor.accept(req, socket, head, resolve);
      }),
    );
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    const port = (http.address() as { port: number }).port;
    client = await dialWebSocket(`ws://127.0.0.1:${port}/`, { timeoutMs: 2000, agent }).channel;
    server = await accepted;
    expect(agent.sockets_).toHaveLength(1);
    clientWrites = countWrites(agent.sockets_[0]);
  });

  afterAll(async () => {
    client?.close();
    acceptor.close();
    await new Promise((r) => http.close(r));
  });

  const burst = (n: number): Buffer[] =>
    Array.from({ length: n }, (_, i) => Buffer.alloc(100 + i, i));

  it('sends a burst from the dialer in one write, every message intact and in order', async () => {
    const got = collect(server);
    const before = clientWrites.n;
    const sent = burst(20);
    let written = 0;
    for (const m of sent) client.send(m, () => written++);
    await until(() => got.length === sent.length && written === sent.length);
    expect(got).toEqual(sent);
    expect(clientWrites.n - before).toBe(1);
  });

  it('sends a burst from the listener in one write, and the next turn in another', async () => {
    const got = collect(client);
    const before = serverWrites.n;
    const first = burst(20);
    for (const m of first) server.send(m);
    await until(() => got.length === first.length);
    const second = burst(5);
    for (const m of second) server.send(m);
    await until(() => got.length === first.length + second.length);
    expect(got).toEqual([...first, ...second]);
    expect(serverWrites.n - before).toBe(2);
  });
});
