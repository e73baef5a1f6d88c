/**
 * One-stream throughput over loopback beside plain TCP (the anchor), in one process and with
 * the listener in a second process (as relay and worker run). A benchmark, not a test: it prints
 * a table and asserts nothing. Runs from the sources (test helpers and benchmarks are not built
 * into dist): `node -r ./scripts/ts-register.js libs/tunnel/bench/throughput.ts [MiB]`.
 */
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { silentLogger } from '../../config/src';
import { KeyRing, listenTunnel, TunnelDialer, type TunnelSession } from '../src';
import { tunnelPair } from '../src/testing/harness';

const CHUNK = Buffer.alloc(1024 * 1024, 7);

/** Writes `total` bytes into `out`, honouring backpressure, then ends it. */
async function push(out: NodeJS.WritableStream, total: number): Promise<void> {
  for (let sent = 0; sent < total; sent += CHUNK.length) {
    if (!out.write(CHUNK)) await new Promise((r) => out.once('drain', r));
  }
  out.end();
}

/** Resolves once `total` bytes were read from `src`. */
function counted(src: NodeJS.ReadableStream, total: number): Promise<void> {
  let got = 0;
  return new Promise((resolve) =>
    src.on('data', (c: Buffer) => {
      got += c.length;
      if (got >= total) resolve();
    }),
  );
}

/** Accepts streams into `counted`; `done` resolves when one stream delivered `total` bytes. */
function sink(session: TunnelSession, total: number, done: () => void): void {
  session.on('stream', (_t: string, st: Duplex) => {
    st.on('error', () => undefined);
    void counted(st, total).then(done);
  });
}

async function plainTcp(total: number): Promise<number> {
  let done!: Promise<void>;
  const server = createServer((s) => {
    done = counted(s, total);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const t0 = performance.now();
  const c = connect((server.address() as AddressInfo).port, '127.0.0.1');
  await new Promise((r) => c.once('connect', r));
  await push(c, total);
  await done;
  const ms = performance.now() - t0;
  c.destroy();
  server.close();
  return ms;
}

async function oneProcess(total: number): Promise<number> {
  let finished!: () => void;
  const done = new Promise<void>((r) => (finished = r));
  const pair = await tunnelPair({ onServer: (s) => sink(s, total, finished) });
  const t0 = performance.now();
  const stream = pair.client.openStream('sink');
  stream.on('error', () => undefined);
  await push(stream, total);
  await done;
  const ms = performance.now() - t0;
  await pair.close();
  return ms;
}

async function twoProcesses(total: number): Promise<number> {
  const secret = randomBytes(32);
  const child = fork(__filename, ['listener', String(total)], {
    env: { ...process.env, BENCH_KEY: secret.toString('hex') },
  });
  const port = await new Promise<number>((r) => child.once('message', (m) => r(m as number)));
  let up!: (s: TunnelSession) => void;
  const session = new Promise<TunnelSession>((r) => (up = r));
  const dialer = new TunnelDialer({
    url: `ws://127.0.0.1:${port}/`,
    keys: KeyRing.fromSecrets([secret]),
    logger: silentLogger(),
    onSession: up,
  });
  dialer.start();
  const s = await session;
  const done = new Promise((r) => child.once('message', r));
  const t0 = performance.now();
  const stream = s.openStream('sink');
  stream.on('error', () => undefined);
  await push(stream, total);
  await done;
  const ms = performance.now() - t0;
  await dialer.stop();
  child.kill();
  return ms;
}

async function listenerChild(total: number): Promise<void> {
  const keys = KeyRing.fromSecrets([Buffer.from(process.env.BENCH_KEY ?? '', 'hex')]);
  const listener = await listenTunnel({
    host: '127.0.0.1',
    port: 0,
    keys,
    logger: silentLogger(),
    onSession: (s) => sink(s, total, () => process.send?.('done')),
  });
  process.send?.(listener.address().port);
}

async function main(): Promise<void> {
  if (process.argv[2] === 'listener') return listenerChild(Number(process.argv[3]));
  const mib = Number(process.argv[2] ?? 1024);
  const total = mib * 1024 * 1024;
  const rows: [string, number][] = [
    ['plain TCP, one process', await plainTcp(total)],
    ['tunnel, one process', await oneProcess(total)],
    ['tunnel, two processes', await twoProcesses(total)],
  ];
  console.log(
    `one stream, ${mib} MiB, loopback (anchor: a spiped pair did about 160 MB/s on this machine kind; npm run bench:tunnel measures it)`,
  );
  for (const [name, ms] of rows)
    console.log(`${name.padEnd(26)} ${(total / ms / 1000).toFixed(0).padStart(6)} MB/s`);
}

void main();
