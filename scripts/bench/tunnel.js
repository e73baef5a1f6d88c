#!/usr/bin/env node
'use strict';
// `npm run bench:tunnel`: gpu-sidecar's relay + worker (built, as processes) beside a spiped pair
// and plain TCP, all in one run on loopback, all in front of the same worker API (GET /test).
// Prints a table; asserts nothing. Issue targets are printed beside each row.
const { spawn, spawnSync, execFileSync } = require('node:child_process');
const { mkdtempSync, readFileSync, rmSync } = require('node:fs');
const { connect, createServer } = require('node:net');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..', '..');
const bin = path.join(root, 'bin', 'gpu-sidecar');
const dir = mkdtempSync(path.join(os.tmpdir(), 'gsc-bench-'));
const children = [];
const N_CONN = Number(process.env.BENCH_CONNECTIONS ?? 400);
const N_RTT = Number(process.env.BENCH_ROUND_TRIPS ?? 2000);
const LOAD_MS = Number(process.env.BENCH_LOAD_MS ?? 4000);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ms = (x) => (x === undefined ? 'n/a' : `${x.toFixed(2)} ms`);

async function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitPort(port) {
  for (let i = 0; i < 300; i++) {
    const ok = await new Promise((r) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`port ${port} never opened`);
}

function start(cmd, args, env) {
  const c = spawn(cmd, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  c.stderr.on('data', (d) => (err += d));
  c.on('exit', (code) => {
    if (code && !stopping)
      process.stderr.write(
        `${path.basename(cmd)} ${args[0]} exited ${code}:\n${err.slice(-2000)}\n`,
      );
  });
  children.push(c);
  return c;
}

const REQUEST = 'GET /test HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n';

/** New TCP connection, one GET /test, read to the end: milliseconds. */
function oneConnection(port) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const s = connect(port, '127.0.0.1');
    let got = '';
    s.setNoDelay(true);
    s.on('connect', () => s.write(REQUEST));
    s.on('data', (d) => (got += d));
    s.on('end', () => {
      if (!got.includes('"ok"'))
        return reject(new Error(`bad answer on ${port}: ${got.slice(0, 80)}`));
      resolve(Number(process.hrtime.bigint() - t0) / 1e6);
    });
    s.on('error', reject);
  });
}

async function newConnections(port) {
  const t = [];
  for (let i = 0; i < N_CONN; i++) t.push(await oneConnection(port));
  return t;
}

/** Sequential keep-alive GET /test on one open connection: milliseconds per round trip. */
async function roundTrips(port) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const t = [];
  for (let i = 0; i < N_RTT; i++) {
    const t0 = process.hrtime.bigint();
    await new Promise((resolve, reject) => {
      http
        .get({ port, host: '127.0.0.1', path: '/test', agent }, (res) => {
          res.resume();
          res.on('end', resolve);
        })
        .on('error', reject);
    });
    t.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  agent.destroy();
  return t.slice(50); // warm-up
}

/** 50 concurrent loops of new-connection GET /test for LOAD_MS: requests/s and p99. */
async function load(port, concurrency = 50) {
  const lat = [];
  let errors = 0;
  const end = Date.now() + LOAD_MS;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < end) {
        try {
          lat.push(await oneConnection(port));
        } catch {
          errors++;
        }
      }
    }),
  );
  return { rps: lat.length / (LOAD_MS / 1000), p99: pct(lat, 99), errors };
}

function rssMb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]) / 1024;
}

/** Opens `n` idle connections to the relay (each an idle stream) and returns RSS growth. */
async function idleStreams(port, relayPid, workerPid, n = 1000) {
  const before = { relay: rssMb(relayPid), worker: rssMb(workerPid) };
  const socks = [];
  for (let i = 0; i < n; i++) {
    socks.push(
      await new Promise((resolve, reject) => {
        const s = connect(port, '127.0.0.1', () => resolve(s));
        s.on('error', reject);
      }),
    );
  }
  await sleep(1500);
  const after = { relay: rssMb(relayPid), worker: rssMb(workerPid) };
  for (const s of socks) s.destroy();
  return { before, after };
}

let stopping = false;
async function main() {
  execFileSync(bin, ['keygen', path.join(dir, 'key')], { stdio: 'ignore' });
  const key = path.join(dir, 'key');
  const p = {
    api: await freePort(),
    tunnel: await freePort(),
    relay: await freePort(),
    admin: await freePort(),
    spipedE: await freePort(),
    spipedD: await freePort(),
  };
  const worker = start(bin, ['worker', '--env-file', '/dev/null'], {
    TUNNEL_KEY_FILE: key,
    TUNNEL_LISTEN: `127.0.0.1:${p.tunnel}`,
    API_LISTEN: `127.0.0.1:${p.api}`,
    DATA_FOLDER: path.join(dir, 'data'),
    EXPERIMENTS_DIR: path.join(root, 'examples', 'experiments'),
    GPU_DEVICES: 'none',
    LOG_LEVEL: 'warn',
  });
  await waitPort(p.api);
  const relay = start(bin, ['relay', '--env-file', '/dev/null'], {
    TUNNEL_KEY_FILE: key,
    TUNNEL_CONNECT: `ws://127.0.0.1:${p.tunnel}`,
    RELAY_LISTEN: `127.0.0.1:${p.relay}`,
    ADMIN_LISTEN: `127.0.0.1:${p.admin}`,
    LOG_LEVEL: 'warn',
  });
  await waitPort(p.admin);
  for (let i = 0; i < 200; i++) {
    const ok = await fetch(`http://127.0.0.1:${p.admin}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    await sleep(50);
  }
  const hasSpiped = spawnSync('spiped', ['-v']).status === 0;
  if (hasSpiped) {
    start('spiped', [
      '-d',
      '-s',
      `[127.0.0.1]:${p.spipedD}`,
      '-t',
      `[127.0.0.1]:${p.api}`,
      '-k',
      key,
      '-F',
      '-n',
      '0',
    ]);
    start('spiped', [
      '-e',
      '-s',
      `[127.0.0.1]:${p.spipedE}`,
      '-t',
      `[127.0.0.1]:${p.spipedD}`,
      '-k',
      key,
      '-F',
      '-n',
      '0',
    ]);
    await waitPort(p.spipedE);
  }
  const paths = [
    ['plain TCP (API direct)', p.api],
    ...(hasSpiped ? [['spiped pair', p.spipedE]] : []),
    ['gpu-sidecar relay', p.relay],
  ];
  for (const [, port] of paths) await oneConnection(port); // warm up

  const rows = [];
  for (const [name, port] of paths) {
    const nc = await newConnections(port);
    const rt = await roundTrips(port);
    const ld = await load(port);
    rows.push({ name, nc, rt, ld });
  }
  const idle = await idleStreams(p.relay, relay.pid, worker.pid);

  // (a) bulk, one stream: the tunnel library between two processes, plain TCP and spiped, 1 GiB.
  const bulk = spawnSync(
    process.execPath,
    [path.join(root, 'dist', 'libs', 'tunnel', 'bench', 'throughput.js'), '1024'],
    { encoding: 'utf8' },
  );
  const spipedBulk = hasSpiped ? await spipedThroughput(key, 1024) : undefined;

  console.log(
    `\ngpu-sidecar tunnel benchmark (loopback, ${os.cpus().length} cores, node ${process.version})\n`,
  );
  console.log('| measure | ' + rows.map((r) => r.name).join(' | ') + ' | target |');
  console.log('|---|' + rows.map(() => '---|').join('') + '---|');
  const line = (label, f, target) =>
    console.log(`| ${label} | ${rows.map(f).join(' | ')} | ${target} |`);
  line('(b) new connection + GET /test, p50', (r) => ms(pct(r.nc, 50)), 'relay ≤ 0.25x spiped');
  line('(b) new connection + GET /test, p99', (r) => ms(pct(r.nc, 99)), '');
  line('(c) round trip on an open connection, p50', (r) => ms(pct(r.rt, 50)), 'relay ≤ spiped');
  line('(c) round trip on an open connection, p99', (r) => ms(pct(r.rt, 99)), '');
  line(
    '(d) GET /test req/s, 50 concurrent new connections',
    (r) => `${r.ld.rps.toFixed(0)}/s (${r.ld.errors} errors)`,
    'relay ≥ 2x spiped',
  );
  line('(d) p99 under that load', (r) => ms(r.ld.p99), '');
  console.log(
    `\n(f) RSS with 1,000 idle streams open: relay ${idle.before.relay.toFixed(1)} → ${idle.after.relay.toFixed(1)} MB, ` +
      `worker ${idle.before.worker.toFixed(1)} → ${idle.after.worker.toFixed(1)} MB (target: +50 MB at most)`,
  );
  console.log(
    `\n(a) one stream, 1 GiB:${spipedBulk ? ` spiped pair ${spipedBulk.toFixed(0)} MB/s;` : ''} tunnel library (target ≥ 2x spiped):`,
  );
  console.log(bulk.stdout.trim() || bulk.stderr.trim());
  console.log(
    '\n(e) p99 of GET /test during a bulk transfer on the same tunnel: not measured yet (no bulk route through the relay).',
  );
}

/** spiped pair in front of a TCP sink: MB/s for `mib` MiB through one connection. */
async function spipedThroughput(key, mib) {
  const sinkPort = await freePort();
  const d = await freePort();
  const e = await freePort();
  const total = mib * 1024 * 1024;
  let resolveDone;
  const done = new Promise((r) => (resolveDone = r));
  const sink = createServer((s) => {
    let got = 0;
    s.on('data', (c) => {
      got += c.length;
      if (got >= total) resolveDone();
    });
  }).listen(sinkPort, '127.0.0.1');
  const a = start('spiped', [
    '-d',
    '-s',
    `[127.0.0.1]:${d}`,
    '-t',
    `[127.0.0.1]:${sinkPort}`,
    '-k',
    key,
    '-F',
  ]);
  const b = start('spiped', [
    '-e',
    '-s',
    `[127.0.0.1]:${e}`,
    '-t',
    `[127.0.0.1]:${d}`,
    '-k',
    key,
    '-F',
  ]);
  await waitPort(e);
  const chunk = Buffer.alloc(1024 * 1024, 7);
  const s = connect(e, '127.0.0.1');
  await new Promise((r) => s.on('connect', r));
  const t0 = process.hrtime.bigint();
  for (let sent = 0; sent < total; sent += chunk.length) {
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
  }
  await done;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  s.destroy();
  sink.close();
  a.kill();
  b.kill();
  return total / 1e6 / secs;
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => {
    stopping = true;
    for (const c of children) c.kill('SIGTERM');
    setTimeout(() => rmSync(dir, { recursive: true, force: true }), 500);
  });
