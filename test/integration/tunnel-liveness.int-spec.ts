import { createServer, connect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { silentLogger } from '../../libs/config/src/logger';
import {
  listenTunnel,
  serveTargets,
  StreamResetError,
  TunnelDialer,
  type TunnelListener,
  type TunnelSession,
} from '../../libs/tunnel/src';
import {
  CountingMetrics,
  randomRing,
  tcpServer,
  tunnelPair,
  waitFor,
} from '../../libs/tunnel/src/testing/harness';

jest.setTimeout(20_000);

/** A TCP relay that can freeze (a silent black hole: sockets open, nothing forwarded) or cut. */
async function proxy(
  toPort: number,
): Promise<{ port: number; freeze(): void; cut(): void; close(): Promise<void> }> {
  const sockets: Socket[] = [];
  let frozen = false;
  const server: Server = createServer((inbound) => {
    const outbound = connect(toPort, '127.0.0.1');
    sockets.push(inbound, outbound);
    for (const [a, b] of [
      [inbound, outbound],
      [outbound, inbound],
    ] as const) {
      a.on('data', (d: Buffer) => !frozen && b.write(d));
      a.on('error', () => undefined);
      a.on('close', () => b.destroy());
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const destroyAll = (): void => sockets.forEach((s) => s.destroy());
  return {
    port: (server.address() as { port: number }).port,
    freeze: () => (frozen = true),
    cut: destroyAll,
    close: () => new Promise<void>((r) => (destroyAll(), server.close(() => r()))),
  };
}

const closeReason = (s: TunnelSession): Promise<string> =>
  s.closeReason !== undefined
    ? Promise.resolve(s.closeReason)
    : new Promise((r) => s.once('close', r));

/** Listener ← proxy ← dialer, ping every 100 ms, with both sessions up. */
async function proxiedPair() {
  const keys = randomRing();
  const metrics = new CountingMetrics();
  const clientMetrics = new CountingMetrics();
  let server: TunnelSession | undefined;
  let client: TunnelSession | undefined;
  const listener = await listenTunnel({
    host: '127.0.0.1',
    port: 0,
    keys,
    logger: silentLogger(),
    metrics,
    pingIntervalMs: 100,
    onSession: (s) => (server = s),
  });
  const relay = await proxy(listener.address().port);
  const dialer = new TunnelDialer({
    url: `ws://127.0.0.1:${relay.port}/`,
    keys,
    logger: silentLogger(),
    metrics: clientMetrics,
    pingIntervalMs: 100,
    onSession: (s) => (client = s),
    backoff: { initialMs: 5000 },
  });
  dialer.start();
  await waitFor(() => client !== undefined && server !== undefined);
  const close = async (): Promise<void> => {
    await dialer.stop();
    await relay.close();
    await listener.close();
  };
  return { client: client!, server: server!, relay, metrics, clientMetrics, close };
}

describe('tunnel liveness, close and reconnect', () => {
  it('finds a peer that went silent by ping timeout, within 3 intervals', async () => {
    const p = await proxiedPair();
    const frozenAt = performance.now();
    p.relay.freeze();
    // Both ends ping: whichever times out first ends the session by ping timeout; the other
    // may then see that cut first ('connection lost') instead of its own timeout.
    const reasons = await Promise.all([closeReason(p.server), closeReason(p.client)]);
    expect(reasons).toContain('ping timeout');
    for (const r of reasons) expect(['ping timeout', 'connection lost']).toContain(r);
    expect(performance.now() - frozenAt).toBeLessThan(2000); // exact bound: liveness.spec.ts
    // Counted by the end that timed out (the listener's metrics, or the dialer's).
    const [serverReason, clientReason] = reasons;
    if (serverReason === 'ping timeout') {
      expect(p.metrics.count('sessionDown:ping timeout')).toBe(1);
    }
    if (clientReason === 'ping timeout') {
      expect(p.clientMetrics.count('sessionDown:ping timeout')).toBe(1);
    }
    await p.close();
  });

  it('measures the round-trip time with PING/PONG', async () => {
    const p = await proxiedPair();
    await waitFor(() => p.client.rttMs !== undefined);
    expect(p.client.rttMs).toBeGreaterThan(0);
    await p.close();
  });

  it('reports a cut connection as lost, not as an orderly close', async () => {
    const p = await proxiedPair();
    p.relay.cut();
    expect(await closeReason(p.server)).toBe('connection lost');
    await p.close();
  });

  it('closes with an authenticated CLOSE that the peer reports with its reason', async () => {
    const pair = await tunnelPair();
    const peerReason = closeReason(pair.server);
    await pair.client.close('maintenance');
    expect(await peerReason).toBe('peer closed: maintenance');
    await pair.close();
  });

  it('ends every open stream with an error when the session ends', async () => {
    const pair = await tunnelPair({
      onServer: (s) => s.on('stream', (_t: string, st: Duplex) => st.on('error', () => undefined)),
    });
    const stream = pair.client.openStream('anything');
    const err = new Promise<Error>((r) => stream.once('error', r));
    await waitFor(() => pair.server.openStreams === 1);
    await pair.server.close('bye');
    expect(await err).toBeInstanceOf(StreamResetError);
    await pair.close();
  });

  it('resets a stream to an unknown target and counts it, the session going on', async () => {
    const metrics = new CountingMetrics();
    const pair = await tunnelPair({
      onServer: (s) => serveTargets(s, new Map(), silentLogger(), metrics),
    });
    const stream = pair.client.openStream('nope');
    stream.end('optimistic data');
    const err = await new Promise<StreamResetError>((r) => stream.once('error', r));
    expect(err.reason).toBe('unknown target');
    expect(metrics.count('streamRefused:unknown target')).toBe(1);
    expect(pair.client.closeReason).toBeUndefined();
    await pair.close();
  });

  it('resets a stream whose target refuses the connection', async () => {
    const gone = await tcpServer();
    await gone.close();
    const metrics = new CountingMetrics();
    const pair = await tunnelPair({
      onServer: (s) =>
        serveTargets(
          s,
          new Map([['api', { host: '127.0.0.1', port: gone.port }]]),
          silentLogger(),
          metrics,
        ),
    });
    const stream = pair.client.openStream('api');
    const err = await new Promise<StreamResetError>((r) => stream.once('error', r));
    expect(err.reason).toBe('target refused');
    expect(metrics.count('streamRefused:target refused')).toBe(1);
    await pair.close();
  });

  it('reconnects after the listener restarts on the same port', async () => {
    const keys = randomRing();
    const sessions: TunnelSession[] = [];
    const start = (port: number): Promise<TunnelListener> =>
      listenTunnel({
        host: '127.0.0.1',
        port,
        keys,
        logger: silentLogger(),
        onSession: () => undefined,
      });
    let listener = await start(0);
    const port = listener.address().port;
    const metrics = new CountingMetrics();
    const dialer = new TunnelDialer({
      url: `ws://127.0.0.1:${port}/`,
      keys,
      logger: silentLogger(),
      metrics,
      onSession: (s) => sessions.push(s),
      backoff: { initialMs: 50, maxMs: 200 },
    });
    dialer.start();
    await waitFor(() => sessions.length === 1);
    await listener.close();
    await waitFor(() => sessions[0].closeReason !== undefined);
    listener = await start(port);
    await waitFor(() => sessions.length === 2);
    expect(sessions[1].closeReason).toBeUndefined();
    expect(metrics.count('reconnect')).toBeGreaterThanOrEqual(1);
    await dialer.stop();
    await listener.close();
  });
});
