import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import { loadKeyRing } from '../../libs/tunnel/src';
import {
  encodeFrame,
  FrameSealer,
  InitiatorHandshake,
  MAX_PENDING,
  PROTOCOL_VERSION,
  type Frame,
} from '../../libs/tunnel/src/protocol';
import { runCli, type DaemonProcess } from '../support/daemon';
import { metricsText, metricValue, startPair, waitUntil, type Pair } from '../support/system';
import { ATTACK_SCALE, recordAttack, timed } from './support';

jest.setTimeout(ATTACK_SCALE.full ? 600_000 : 120_000);

/** Counts the flood process printed when stopped (test/attack/flood.js). */
interface FloodCounts {
  opened: number;
  closedByPeer: number;
  upgraded: number;
  refused: number;
  errors: number;
}

/** Starts test/attack/flood.js: CONCURRENCY connections from `from`, each reopened when dropped. */
function startFlood(
  mode: 'pending' | 'silent',
  port: number,
  from: string,
  concurrency: number,
): { stop(): Promise<FloodCounts> } {
  const child = spawn(
    process.execPath,
    [path.join(__dirname, 'flood.js'), mode, '127.0.0.1', String(port), from, String(concurrency)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => child.once('exit', r));
  return {
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      return JSON.parse(out) as FloodCounts;
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const rssMb = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

/** GET /test through the relay at `port`: true on 200. */
async function getTest(port: number): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${port}/test`, { signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  return res.status === 200;
}

/**
 * Opens a connection to the tunnel port that asks for the upgrade with a version this build
 * does not speak, and then keeps its side open. Resolves with the connection once the worker
 * answered; `ended` tells whether the worker has closed it since.
 */
function wrongVersion(port: number): Promise<{ socket: Socket; answer: string; ended(): boolean }> {
  return new Promise((resolve, reject) => {
    let ended = false;
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    socket.on('error', () => undefined);
    socket.once('end', () => (ended = true));
    socket.once('close', () => (ended = true));
    socket.once('data', (d: Buffer) =>
      resolve({ socket, answer: d.toString('latin1').split('\r\n')[0], ended: () => ended }),
    );
    socket.once('close', () => reject(new Error('closed before any answer')));
    socket.write(
      [
        'GET / HTTP/1.1',
        'Host: 127.0.0.1',
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
        'Sec-WebSocket-Version: 13',
        'Sec-WebSocket-Protocol: gpu-sidecar.v0',
        '',
        '',
      ].join('\r\n'),
    );
  });
}

/**
 * A peer that holds the key: a real WebSocket and handshake, then frames it seals itself.
 * `pause()` stops reading (the socket's receive buffer fills, then the worker's send queue).
 */
async function keyHolder(
  port: number,
  authKey: Buffer,
): Promise<{ send(f: Frame): void; pause(): void; ws: WebSocket }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, [PROTOCOL_VERSION], {
    perMessageDeflate: false,
  });
  const hs = new InitiatorHandshake(authKey);
  const keys = await new Promise<{ send: Buffer }>((resolve, reject) => {
    ws.on('message', (m: Buffer) => {
      const step = hs.receive(m);
      if (!step.ok) return reject(new Error(step.reason));
      if (step.reply) ws.send(step.reply);
      if (step.keys) resolve(step.keys);
    });
    ws.once('error', reject);
  });
  ws.removeAllListeners('message');
  const sealer = new FrameSealer(keys.send);
  return {
    ws,
    pause: () => ws.pause(),
    send: (f) => {
      const { header, body } = encodeFrame(f);
      ws.send(sealer.seal(header, body)!);
    },
  };
}

/** The `time` of the first log line of `p` whose msg is `msg`. */
function logTime(p: DaemonProcess, msg: string): number | undefined {
  for (const line of `${p.stderr()}\n${p.stdout()}`.split('\n')) {
    if (!line.includes(`"msg":"${msg}"`)) continue;
    return (JSON.parse(line) as { time: number }).time;
  }
  return undefined;
}

/**
 * Starts the relay of `pair` again and waits for its tunnel session. Resolves with the ms from
 * the relay's `relay starting` line (its code running: keys loaded, then the dial) to its
 * `tunnel session up` line, which is what a flood could delay, and from the spawn, which adds
 * Node's own start on a CPU the flood keeps busy; undefined if no session came.
 */
async function restartRelay(
  pair: Pair,
  withinMs: number,
): Promise<{ dialMs: number; spawnMs: number } | undefined> {
  await pair.relay.stop();
  const spawned = Date.now();
  const relay: DaemonProcess = runCli(['relay'], pair.relayEnv, pair.dir);
  pair.relay = relay;
  await relay.waitForLog('relay starting', 30_000);
  const up = await relay.waitForLog('tunnel session up', withinMs).then(
    () => true,
    () => false,
  );
  const [starting, session] = [
    logTime(relay, 'relay starting'),
    logTime(relay, 'tunnel session up'),
  ];
  if (!up || starting === undefined || session === undefined) return undefined;
  return { dialMs: session - starting, spawnMs: session - spawned };
}

describe(`keyless peers against the built worker (${ATTACK_SCALE.name})`, () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await startPair();
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it('refused-upgrade flood: every refused socket is closed after its answer, and a relay still gets in', async () => {
    const count = ATTACK_SCALE.full ? 3_000 : 1_100;
    const pid = pair.worker.child.pid!;
    const base = fds(pid);
    const conns: Awaited<ReturnType<typeof wrongVersion>>[] = [];
    const latencies: number[] = [];
    let ok = 0;
    // The flood is sent all at once; the relay restarts while it is being answered.
    const flood = Promise.all(
      Array.from({ length: count }, () =>
        wrongVersion(pair.ports.tunnel).then((c) => void conns.push(c)),
      ),
    );
    const restarts = ATTACK_SCALE.full ? 3 : 1;
    for (let i = 0; i < restarts; i++) {
      const t = await restartRelay(pair, 5_000);
      if (t && t.dialMs <= 5_000) {
        ok++;
        latencies.push(t.dialMs);
      }
    }
    await flood;
    // None of them closed its side; the worker must have closed every one after its 400.
    await waitUntil(
      'the worker closing every refused socket',
      () => conns.every((c) => c.ended()),
      10_000,
    ).catch(() => undefined);
    const held = conns.filter((c) => !c.ended()).length;
    const answers = new Set(conns.map((c) => c.answer));
    const after = fds(pid);
    const legitTest = await timed(() => getTest(pair.ports.relay));
    if (legitTest.ok) ok++;
    latencies.push(legitTest.ms);
    for (const c of conns) c.socket.destroy();
    recordAttack('tunnel-refused-upgrades', {
      attack: `WebSocket upgrades offering gpu-sidecar.v0 (answered 400), the client never closing its side, all at once, a relay restarted ${restarts}x meanwhile and /test after`,
      times: count,
      gotThrough: held,
      counted: 'refused sockets the worker still held after its answer',
      legit: { tried: restarts + 1, ok, latenciesMs: latencies },
      extra: { answers: [...answers], workerFds: { before: base, after } },
    });
    expect([...answers]).toEqual(['HTTP/1.1 400 Bad Request']);
    expect(held).toBe(0);
    expect(after).toBeLessThanOrEqual(base + 10);
    expect(ok).toBe(restarts + 1);
  });

  it('pending-handshake flood from one address: a restarted relay gets a session within 5 s, from another address and from the same one', async () => {
    // Well past the listener's cap (MAX_PENDING): it evicts all the time, and every evicted
    // connection comes back at once.
    const concurrency = (ATTACK_SCALE.full ? 3 : 2) * MAX_PENDING;
    const restarts = ATTACK_SCALE.full ? 5 : 2;
    // What a restart costs with no flood.
    const quiet = await restartRelay(pair, 20_000);
    expect(quiet).toBeDefined();
    const latencies: number[] = [];
    const fromSpawn: number[] = [];
    const floods: Record<string, FloodCounts> = {};
    let ok = 0;
    for (const from of ['127.0.0.2', '127.0.0.1']) {
      const flood = startFlood('pending', pair.ports.tunnel, from, concurrency);
      await sleep(1_500); // the flood at full speed before the relay restarts
      for (let i = 0; i < restarts; i++) {
        const t = await restartRelay(pair, 5_000);
        if (t && t.dialMs <= 5_000) {
          ok++;
          latencies.push(t.dialMs);
          fromSpawn.push(t.spawnMs);
        }
      }
      floods[from] = await flood.stop();
    }
    const opened = floods['127.0.0.1'].opened + floods['127.0.0.2'].opened;
    recordAttack('tunnel-pending-flood', {
      attack: `keyless WebSocket upgrades left after HELLO, ${concurrency} at once from one address, reopened at once when dropped; the relay restarted ${restarts}x while it came from 127.0.0.2, then ${restarts}x from 127.0.0.1 (the relay's own)`,
      times: opened,
      gotThrough: 2 * restarts - ok,
      counted: 'restarted relays without a session within 5 s of starting',
      legit: { tried: 2 * restarts, ok, latenciesMs: latencies },
      extra: {
        noFlood: quiet,
        fromSpawnMs: fromSpawn.map(Math.round),
        floods,
      },
    });
    expect(ok).toBe(2 * restarts);
  });

  it('a key-holding peer flooding PING and OPEN without reading: its session ends, the worker stays bounded', async () => {
    const frames = ATTACK_SCALE.full ? 1_000_000 : 300_000;
    const pid = pair.worker.child.pid!;
    const metricsUrl = `http://127.0.0.1:${pair.ports.api}/metrics`;
    const endedBefore =
      metricValue(await metricsText(metricsUrl), 'tunnel_sessions_closed_total', {
        reason: 'send queue full',
      }) ?? 0;
    const authKey = (await loadKeyRing(pair.keyFile)).primary.authKey;
    const peer = await keyHolder(pair.ports.tunnel, authKey);
    peer.pause();
    const base = rssMb(pid);
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 100);
    // The legitimate relay's requests meanwhile, on its own session.
    const legit: { ok: boolean; ms: number }[] = [];
    let attacking = true;
    const legitLoop = (async () => {
      while (attacking) legit.push(await timed(() => getTest(pair.ports.relay)));
    })();
    let sent = 0;
    let sid = 1;
    for (; sent < frames && peer.ws.readyState === WebSocket.OPEN; sent++) {
      // PINGs that ask for a PONG each, and OPENs of a target the worker does not have, which
      // ask for a RESET each: both are answers the worker queues for a peer that never reads.
      peer.send(
        sent % 2 === 0
          ? { type: 'ping', body: randomBytes(8) }
          : { type: 'open', sid: (sid += 2), target: 'nope' },
      );
      if (sent % 2_000 === 0) await new Promise((r) => setImmediate(r));
    }
    const endedNow = async () =>
      (metricValue(await metricsText(metricsUrl), 'tunnel_sessions_closed_total', {
        reason: 'send queue full',
      }) ?? 0) - endedBefore;
    await waitUntil(
      'the worker ending the session',
      async () => (await endedNow()) > 0,
      15_000,
    ).then(undefined, () => undefined);
    attacking = false;
    await legitLoop;
    clearInterval(sampler);
    const ended = await endedNow();
    peer.ws.terminate();
    recordAttack('tunnel-keyholder-no-read', {
      attack:
        'a peer with the key sends PINGs and OPENs of an unknown target as fast as it can and never reads the PONGs and RESETs',
      times: sent,
      gotThrough: ended === 1 ? 0 : 1,
      counted: 'sessions not ended for `send queue full`',
      legit: {
        tried: legit.length,
        ok: legit.filter((l) => l.ok).length,
        latenciesMs: legit.map((l) => l.ms),
      },
      extra: { workerRssMb: { before: Math.round(base), peak: Math.round(peak) } },
    });
    expect(ended).toBe(1);
    expect(peak - base).toBeLessThan(100);
    expect(legit.length).toBeGreaterThan(0);
    expect(legit.every((l) => l.ok)).toBe(true);
  });
});
