import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

// The WAN benchmark's link emulator (scripts/bench/wan-link.js): its model on a fake clock
// (exact), and its proxy on real sockets (only bounds that hold however loaded the machine is;
// `node scripts/bench/wan.js --selftest` measures how close to the model it runs).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const wan = require('../../scripts/bench/wan-link.js') as {
  LinkDirection: new (o: {
    delayMs: number;
    rateBps: number;
    queueBytes: number;
    clock: () => number;
    setTimer: (fn: () => void, ms: number) => unknown;
  }) => {
    send(length: number, deliver: () => void): number;
    full(): boolean;
    queued(t?: number): number;
    whenNotFull(fn: () => void): void;
  };
  createLink(o: { delayMs: number; rateBps: number; queueBytes?: number }): unknown;
  startLinkProxy(o: {
    link: unknown;
    target: { host: string; port: number };
  }): Promise<{ port: number; close(): Promise<void> }>;
};

/** A clock and timers that move only when told. */
function fakeTime() {
  let t = 0;
  const timers: { at: number; fn: () => void }[] = [];
  return {
    clock: () => t,
    setTimer: (fn: () => void, ms: number) => timers.push({ at: t + ms, fn }),
    advance(to: number) {
      for (;;) {
        timers.sort((a, b) => a.at - b.at);
        const next = timers[0];
        if (!next || next.at > to) break;
        timers.shift();
        t = next.at;
        next.fn();
      }
      t = to;
    },
  };
}

describe('WAN link model', () => {
  const MB = 1_000_000;

  it('delivers a small message one delay later, and serialises bytes at the rate', () => {
    const time = fakeTime();
    const dir = new wan.LinkDirection({ delayMs: 10, rateBps: MB, queueBytes: MB, ...time });
    const got: [string, number][] = [];
    expect(dir.send(0, () => got.push(['fin', time.clock()]))).toBe(10);
    // 100 kB at 1 MB/s takes 100 ms to send, then 10 ms to travel.
    expect(dir.send(100_000, () => got.push(['bulk', time.clock()]))).toBe(110);
    time.advance(200);
    expect(got).toEqual([
      ['fin', 10],
      ['bulk', 110],
    ]);
  });

  it('shares the rate between senders first come, first served', () => {
    const time = fakeTime();
    const dir = new wan.LinkDirection({ delayMs: 5, rateBps: MB, queueBytes: 10 * MB, ...time });
    // Two connections each send 10 chunks of 10 kB, interleaved: together 200 kB at 1 MB/s.
    const done: Record<string, number> = {};
    for (let i = 0; i < 10; i++)
      for (const c of ['a', 'b']) dir.send(10_000, () => (done[c] = time.clock()));
    time.advance(1000);
    expect(done.a).toBeCloseTo(190 + 5, 6); // a's last chunk is the 19th of 20
    expect(done.b).toBeCloseTo(200 + 5, 6);
  });

  it('is full while more than its queue waits, and says when it is not', () => {
    const time = fakeTime();
    const dir = new wan.LinkDirection({ delayMs: 1, rateBps: MB, queueBytes: 50_000, ...time });
    dir.send(100_000, () => undefined);
    expect(dir.queued()).toBeCloseTo(100_000, 3);
    expect(dir.full()).toBe(true);
    let woke = -1;
    dir.whenNotFull(() => (woke = time.clock()));
    time.advance(1000);
    expect(woke).toBeCloseTo(50, 6); // 50 kB left to send after 50 ms
    expect(dir.full()).toBe(false);
  });
});

describe('WAN link proxy (real sockets)', () => {
  let echo: Server;
  let echoPort: number;
  beforeAll(async () => {
    echo = createServer({ allowHalfOpen: true }, (s) => {
      s.on('data', (d) => s.write(d));
      s.on('end', () => s.end());
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoPort = (echo.address() as AddressInfo).port;
  });
  afterAll(() => new Promise((r) => echo.close(r)));

  const open = (port: number) =>
    new Promise<Socket>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => resolve(s));
      s.once('error', reject);
    });

  it('costs a new connection one round trip before its first byte crosses, then one delay', async () => {
    const link = wan.createLink({ delayMs: 40, rateBps: 100 * 1e6 });
    const proxy = await wan.startLinkProxy({ link, target: { host: '127.0.0.1', port: echoPort } });
    try {
      const t0 = performance.now();
      const s = await open(proxy.port);
      const echoed = new Promise<number>((r) => s.once('data', () => r(performance.now() - t0)));
      s.write('ping');
      // handshake (80 ms) + there (40) + back (40)
      expect(await echoed).toBeGreaterThanOrEqual(160);
      const t1 = performance.now();
      const again = new Promise<number>((r) => s.once('data', () => r(performance.now() - t1)));
      s.write('pong');
      expect(await again).toBeGreaterThanOrEqual(80); // an open connection: one round trip
      s.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('carries every byte in order and passes a half-close through', async () => {
    const link = wan.createLink({ delayMs: 2, rateBps: 50 * 1e6, queueBytes: 64 * 1024 });
    const proxy = await wan.startLinkProxy({ link, target: { host: '127.0.0.1', port: echoPort } });
    try {
      const s = await open(proxy.port);
      const sent = Buffer.alloc(3 * 1024 * 1024);
      for (let i = 0; i < sent.length; i++) sent[i] = (i * 7 + (i >> 11)) & 0xff;
      const chunks: Buffer[] = [];
      const t0 = performance.now();
      const ended = new Promise<void>((r) => s.on('end', r));
      s.on('data', (d: Buffer) => chunks.push(d));
      s.end(sent);
      await ended;
      // 3 MiB each way through a 50 MB/s bottleneck takes at least 63 ms per direction,
      // pipelined: at least one direction's worth.
      expect(performance.now() - t0).toBeGreaterThanOrEqual((sent.length / 50e6) * 1000);
      const got = Buffer.concat(chunks);
      expect(got.length).toBe(sent.length);
      expect(got.equals(sent)).toBe(true);
    } finally {
      await proxy.close();
    }
  });
});
