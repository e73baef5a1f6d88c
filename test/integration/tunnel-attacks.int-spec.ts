import { request } from 'node:http';
import { connect } from 'node:net';
import { silentLogger } from '../../libs/config/src/logger';
import {
  KeyRing,
  listenTunnel,
  serveTargets,
  TunnelDialer,
  type TunnelListener,
} from '../../libs/tunnel/src';
import { encodeFrame, FrameSealer, type Frame } from '../../libs/tunnel/src/protocol';
import {
  CountingMetrics,
  randomRing,
  rawPeer,
  tcpServer,
  waitFor,
} from '../../libs/tunnel/src/testing/harness';
import { dialWebSocket } from '../../libs/tunnel/src/transport/ws-adapter';

jest.setTimeout(20_000);

/**
 * Each test plays a hostile or broken peer against a real listener whose one target is a real
 * TCP server, and checks three things: the peer is refused, nothing reached the target, and
 * the reason was counted.
 */
describe('tunnel listener under attack', () => {
  let keys: KeyRing;
  let metrics: CountingMetrics;
  let target: Awaited<ReturnType<typeof tcpServer>>;
  let listener: TunnelListener;
  let url: string;

  beforeEach(async () => {
    keys = randomRing();
    metrics = new CountingMetrics();
    target = await tcpServer();
    listener = await listenTunnel({
      host: '127.0.0.1',
      port: 0,
      keys,
      logger: silentLogger(),
      metrics,
      handshakeTimeoutMs: 1000,
      maxPending: 4,
      onSession: (s) =>
        serveTargets(
          s,
          new Map([['echo', { host: '127.0.0.1', port: target.port }]]),
          silentLogger(),
          metrics,
        ),
    });
    url = `ws://127.0.0.1:${listener.address().port}/`;
  });

  afterEach(async () => {
    await listener.close();
    await target.close();
  });

  const seal = (sealer: FrameSealer, f: Frame): Buffer => {
    const { header, body } = encodeFrame(f);
    return sealer.seal(header, body)!;
  };

  /** Sends `wire` frames from an authenticated raw peer; resolves with why the listener dropped it. */
  async function sendFrames(make: (sealer: FrameSealer) => Buffer[]): Promise<string> {
    const peer = await rawPeer(url, keys.primary.authKey);
    for (const wire of make(new FrameSealer(peer.keys.send))) peer.channel.send(wire);
    return peer.closed;
  }

  const open = (s: FrameSealer): Buffer => seal(s, { type: 'open', sid: 1, target: 'echo' });

  it('drops the session when a bit is flipped anywhere in a frame', async () => {
    for (const at of [0, 3, 9, 20]) {
      await sendFrames((s) => {
        const wire = open(s);
        wire[Math.min(at, wire.length - 1)] ^= 0x01;
        return [wire];
      });
    }
    await waitFor(() => metrics.count('frameRejected:decrypt failed') === 4);
    expect(target.connections).toBe(0);
  });

  it('drops the session on a truncated frame', async () => {
    await sendFrames((s) => [open(s).subarray(0, 20)]);
    await waitFor(() => metrics.count('frameRejected:decrypt failed') === 1);
    expect(target.connections).toBe(0);
  });

  it('drops the session when frames arrive out of order', async () => {
    await sendFrames((s) => {
      const first = open(s);
      const second = seal(s, { type: 'data', sid: 1, data: Buffer.from('hi') });
      return [second, first];
    });
    await waitFor(() => metrics.count('frameRejected:decrypt failed') === 1);
    expect(target.connections).toBe(0);
  });

  it('drops the session when a frame is replayed from another session', async () => {
    const first = await rawPeer(url, keys.primary.authKey);
    const captured = open(new FrameSealer(first.keys.send));
    first.channel.close();
    await sendFrames(() => [captured]);
    await waitFor(() => metrics.count('frameRejected:decrypt failed') === 1);
    expect(target.connections).toBe(0);
  });

  it('refuses a dialer with the wrong key before any target is reached, and tells it `bad key`', async () => {
    const dialerMetrics = new CountingMetrics();
    const failures: string[] = [];
    const dialer = new TunnelDialer({
      url,
      keys: randomRing(),
      logger: silentLogger(),
      metrics: dialerMetrics,
      onSession: () => undefined,
      onFailure: (detail) => failures.push(detail),
      backoff: { initialMs: 50 },
    });
    dialer.start();
    await waitFor(() => metrics.count('handshake:failed:bad key') >= 1);
    await waitFor(() => dialerMetrics.count('handshake:failed:bad key') >= 1);
    await dialer.stop();
    // The dialer says what the listener found, not just that the connection closed.
    expect(failures[0]).toBe('bad key');
    expect(dialerMetrics.count('handshake:failed:connection closed')).toBe(0);
    expect(dialerMetrics.count('handshake:ok')).toBe(0);
    expect(metrics.count('handshake:ok')).toBe(0);
    expect(target.connections).toBe(0);
  });

  it('refuses a client that does not speak this protocol version (HTTP 400)', async () => {
    const status = await new Promise<number>((resolve) => {
      const req = request(url.replace('ws:', 'http:'), {
        headers: {
          connection: 'Upgrade',
          upgrade: 'websocket',
          'sec-websocket-version': '13',
          'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
          'sec-websocket-protocol': 'gpu-sidecar.v0',
        },
      });
      req.on('response', (res) => resolve(res.statusCode ?? 0));
      req.on('error', () => resolve(-1));
      req.end();
    });
    expect(status).toBe(400);
    expect(metrics.count('handshake:failed:unsupported version')).toBe(1);
    expect(target.connections).toBe(0);
  });

  it('drops a handshake that stops halfway after the timeout', async () => {
    const channel = await dialWebSocket(url, { timeoutMs: 2000 }).channel;
    const closed = new Promise<string>((r) => channel.setCloseHandler(r));
    channel.setMessageHandler(() => undefined); // reads HELLO, never answers
    await closed;
    expect(metrics.count('handshake:failed:timeout')).toBe(1);
    expect(target.connections).toBe(0);
  });

  it('closes a refused upgrade after its answer, even when the client keeps its side open', async () => {
    const sock = connect({
      port: Number(new URL(url).port),
      host: '127.0.0.1',
      allowHalfOpen: true,
    });
    let answer = '';
    sock.on('data', (d: Buffer) => (answer += d.toString()));
    sock.on('error', () => undefined);
    const ended = new Promise<void>((r) => sock.once('end', () => r()));
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.write(
      'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
        'Sec-WebSocket-Protocol: gpu-sidecar.v0\r\n\r\n',
    );
    await ended;
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    // A FIN alone would leave the listener's side open, reading (and holding a descriptor):
    // closed, it answers our next bytes with a reset, and the write after that fails.
    const writing = setInterval(() => sock.write('still here'), 50);
    await closed;
    clearInterval(writing);
    expect(listener.pending).toBe(0);
  });

  it('evicts the oldest pending handshake past the cap instead of refusing the newcomer', async () => {
    const idle = await Promise.all(
      Array.from({ length: 4 }, () => dialWebSocket(url, { timeoutMs: 2000 }).channel),
    );
    const firstClosed = new Promise<string>((r) => idle[0].setCloseHandler(r));
    for (const c of idle) c.setMessageHandler(() => undefined); // HELLO read, never answered
    // A legitimate dialer while the cap (4) is full of half-open handshakes: it gets in.
    const up = new Promise<void>((resolve) => {
      const dialer = new TunnelDialer({
        url,
        keys,
        logger: silentLogger(),
        onSession: () => void dialer.stop().then(resolve),
      });
      dialer.start();
    });
    await up;
    await firstClosed;
    expect(metrics.count('handshake:failed:evicted')).toBe(1);
    expect(metrics.count('handshake:ok')).toBe(1);
    for (const c of idle) c.terminate();
  });

  it('refuses garbage in place of the handshake', async () => {
    const channel = await dialWebSocket(url, { timeoutMs: 2000 }).channel;
    const closed = new Promise<string>((r) => channel.setCloseHandler(r));
    channel.setMessageHandler(() => channel.send(Buffer.alloc(97, 2)));
    await closed;
    expect(metrics.count('handshake:failed:bad key')).toBe(1);
    expect(target.connections).toBe(0);
  });

  it('accepts a dialer using a second key of the ring (rotation)', async () => {
    const next = randomRing();
    listener.setKeys(new KeyRing([...keys.entries, ...next.entries]));
    const up = new Promise<void>((resolve) => {
      const dialer = new TunnelDialer({
        url,
        keys: next,
        logger: silentLogger(),
        onSession: () => void dialer.stop().then(resolve),
      });
      dialer.start();
    });
    await up;
    expect(metrics.count('handshake:ok')).toBe(1);
  });
});
