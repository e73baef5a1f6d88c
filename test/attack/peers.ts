import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { get } from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import {
  encodeFrame,
  FrameSealer,
  InitiatorHandshake,
  PROTOCOL_VERSION,
  type Frame,
} from '../../libs/tunnel/src/protocol';
import { runCli, type DaemonProcess } from '../support/daemon';
import type { Pair } from '../support/system';

/** Helpers of the attack tests on the tunnel and the relay: attackers and measures. */

/** Counts the flood process printed when stopped (test/attack/flood.js). */
export interface FloodCounts {
  opened: number;
  closedByPeer: number;
  upgraded: number;
  refused: number;
  errors: number;
  /** `badkey` only: how long connections stayed open after their AUTH_I (ms). */
  heldMs?: { n: number; p50: number; p99: number; max: number; over3s: number };
}

/** Starts test/attack/flood.js: CONCURRENCY connections from `from`, each reopened when dropped. */
export function startFlood(
  mode: 'pending' | 'silent' | 'badkey',
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

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Open descriptors of process `pid`. */
export const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
/** Resident memory of process `pid`, in MB. */
export const rssMb = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

/**
 * GET /test on a new TCP connection to `port` (never a kept-alive one: each try must get in
 * past the attack on its own): true on 200 within `timeoutMs`.
 */
export function getTest(port: number, timeoutMs = 10_000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = get(
      { host: '127.0.0.1', port, path: '/test', agent: false, timeout: timeoutMs },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode === 200));
        res.on('error', () => resolve(false));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/**
 * Opens a connection to the tunnel port that asks for the upgrade with a version this build
 * does not speak, and then keeps its side open. Resolves once the worker answered (`answer`
 * is its status line) or closed it unanswered (`answer` empty: evicted past the pending cap
 * before it was read); `ended` tells whether the worker has closed it.
 */
export function wrongVersion(
  port: number,
): Promise<{ socket: Socket; answer: string; ended(): boolean }> {
  return new Promise((resolve) => {
    let ended = false;
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    socket.on('error', () => undefined);
    socket.once('data', (d: Buffer) =>
      resolve({ socket, answer: d.toString('latin1').split('\r\n')[0], ended: () => ended }),
    );
    // Its side stays open (allowHalfOpen): the worker's FIN is its 'end', not a 'close'.
    for (const event of ['end', 'close']) {
      socket.once(event, () => {
        ended = true;
        resolve({ socket, answer: '', ended: () => ended });
      });
    }
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
export async function keyHolder(
  port: number,
  authKey: Buffer,
): Promise<{
  send(f: Frame): void;
  seal(f: Frame): Buffer;
  sendRaw(wire: Buffer): void;
  pause(): void;
  ws: WebSocket;
}> {
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
  const seal = (f: Frame): Buffer => {
    const { header, body } = encodeFrame(f);
    return sealer.seal(header, body)!;
  };
  return {
    ws,
    pause: () => ws.pause(),
    seal,
    sendRaw: (wire) => ws.send(wire),
    send: (f) => ws.send(seal(f)),
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
export async function restartRelay(
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

/** Starts Debian's spiped in the foreground with `args` (its pid file in `dir`). */
export function startSpiped(args: string[], dir: string): ChildProcess {
  const pidFile = path.join(dir, `spiped-${args[0].slice(1)}-${process.hrtime.bigint()}.pid`);
  const child = spawn('spiped', [...args, '-F', '-p', pidFile], { stdio: 'ignore' });
  child.on('error', () => undefined);
  return child;
}

/**
 * A TCP forwarder to 127.0.0.1:`to` that counts the connections made to it (`opened`) and
 * those that carried at least one byte from their client (`carried`).
 */
export async function countingProxy(
  to: number,
): Promise<{ port: number; opened(): number; carried(): number; close(): Promise<void> }> {
  let opened = 0;
  let carried = 0;
  const live = new Set<Socket>();
  const server = createServer((client) => {
    opened++;
    client.once('data', () => carried++);
    const upstream = connect(to, '127.0.0.1');
    for (const s of [client, upstream]) {
      live.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        live.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    opened: () => opened,
    carried: () => carried,
    close: () =>
      new Promise<void>((r) => {
        for (const s of live) s.destroy();
        server.close(() => r());
      }),
  };
}
