import { createHash } from 'node:crypto';
import { Agent, createServer as createHttpServer } from 'node:http';
import { connect, type NetConnectOpts, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { MessageChannel } from '../../libs/tunnel/src/transport/channel';
import { dialWebSocket, UpgradeAcceptor } from '../../libs/tunnel/src/transport/ws-adapter';
import { waitUntil } from '../support/system';

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

const digest = (b: Buffer): string => `${b.length}:${createHash('sha256').update(b).digest('hex')}`;

function collect(channel: MessageChannel): Buffer[] {
  const got: Buffer[] = [];
  channel.setMessageHandler((data) => got.push(Buffer.from(data)));
  return got;
}

const until = (check: () => boolean): Promise<true> =>
  waitUntil('the messages to arrive', check, 5000);

describe('ws adapter write coalescing and gathered frames', () => {
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

  /** `message` cut into `n` parts at fixed points (some parts may be empty, as GCM's are). */
  const cut = (message: Buffer, n: number): Buffer[] => {
    const points = Array.from({ length: n - 1 }, (_, i) =>
      Math.floor((message.length * (i + 1)) / n),
    );
    return [0, ...points].map((start, i) => message.subarray(start, points[i] ?? message.length));
  };
  // Every WebSocket length form (7-bit, 16-bit, 64-bit) and its edges, up to the largest frame.
  const sizes = [1, 125, 126, 127, 65535, 65536, 65557];
  const messages = sizes.map((n, i) => Buffer.alloc(n, i + 1).fill(0xa5, 0, Math.min(n, 3)));

  for (const [name, from, to] of [
    ['dialer (masked frames)', () => client, () => server],
    ['listener', () => server, () => client],
  ] as const) {
    it(`writes a message given as parts as one frame from the ${name}, in order with whole ones`, async () => {
      const got = collect(to());
      const sentOrder: Buffer[] = [];
      let acknowledged = 0;
      for (const [i, m] of messages.entries()) {
        from().send(cut(m, 1 + (i % 4)), () => acknowledged++);
        sentOrder.push(m);
        const whole = Buffer.from(`whole ${i}`);
        from().send(whole);
        sentOrder.push(whole);
      }
      await until(() => got.length === sentOrder.length && acknowledged === messages.length);
      // Digests, not toEqual: jest compares 64 KiB buffers byte by byte, for seconds.
      expect(got.map(digest)).toEqual(sentOrder.map(digest));
    });
  }

  it('writes a small turn of both short length forms as one buffer, from both ends', async () => {
    // Under 16 KiB in all: copied into one buffer with each frame's header written in place
    // (7-bit and 16-bit length forms, masked from the dialer), one write per turn.
    const sizes = [1, 125, 126, 127, 1000, 4000, 65535 - 60000];
    for (const [from, to, writes] of [
      [client, server, () => clientWrites.n],
      [server, client, () => serverWrites.n],
    ] as const) {
      const got = collect(to);
      const before = writes();
      const sent = sizes.map((n, i) => Buffer.alloc(n, 0x30 + i));
      for (const [i, m] of sent.entries()) from.send(i % 2 ? cut(m, 2) : m);
      await until(() => got.length === sent.length);
      expect(got.map(digest)).toEqual(sent.map(digest));
      expect(writes() - before).toBe(1);
    }
  });

  it('writes a burst of messages given as parts in one write', async () => {
    const got = collect(server);
    const before = clientWrites.n;
    const sent = burst(10);
    for (const m of sent) client.send(cut(m, 3));
    await until(() => got.length === sent.length);
    expect(got).toEqual(sent);
    expect(clientWrites.n - before).toBe(1);
  });
});
