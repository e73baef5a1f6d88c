'use strict';
// What the tunnel benchmarks share (tunnel.js on loopback, wan.js across an emulated link):
// the targets, timing helpers, the built daemons and spiped pairs as child processes, and the
// CPU time of a set of processes.
const { fork, spawn } = require('node:child_process');
const { readdirSync, readFileSync } = require('node:fs');
const { connect, createServer } = require('node:net');
const path = require('node:path');

const root = path.join(__dirname, '..', '..');
const bin = path.join(root, 'bin', 'gpu-sidecar');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6;
const pct = (xs, p) => {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const median = (xs) =>
  pct(
    xs.filter((x) => x !== undefined),
    50,
  );

/** The targets: an echo server and a bulk source (writes until the reader goes away). */
function targetsRole() {
  const chunk = Buffer.alloc(256 * 1024, 7);
  const echo = createServer((s) => {
    s.setNoDelay(true);
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end());
    s.on('error', () => undefined);
  }).listen(0, '127.0.0.1');
  const bulk = createServer((s) => {
    let open = true;
    s.on('error', () => undefined);
    s.on('close', () => (open = false));
    s.resume(); // the reader may half-close; nothing it sends matters
    const pump = () => {
      while (open && s.write(chunk));
      if (open) s.once('drain', pump);
    };
    pump();
  }).listen(0, '127.0.0.1');
  Promise.all([echo, bulk].map((srv) => new Promise((r) => srv.once('listening', r)))).then(() =>
    process.send({ echo: echo.address().port, bulk: bulk.address().port }),
  );
}

/**
 * A bulk reader out of the measuring process: drains `port` until told to stop, then reports
 * MB/s from its first byte (the connection's set-up is not the transfer), or from the message
 * 'mark' if one came.
 */
function drainRole(port) {
  const s = connect(port, '127.0.0.1');
  let got = 0;
  let from; // { at, got }
  s.on('data', (d) => {
    from ??= { at: now(), got: 0 };
    got += d.length;
  });
  s.on('error', () => undefined);
  process.on('message', (m) => {
    if (m === 'mark') {
      from = { at: now(), got };
      return;
    }
    const mbps = from === undefined ? 0 : (got - from.got) / 1e3 / (now() - from.at);
    process.send({ mbps, bytes: got });
    s.destroy();
    process.exit(0);
  });
}

/** Resolves once `socket` received `n` bytes (from the moment of the call). */
function receive(socket, n) {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (d) => {
      got += d.length;
      if (got >= n) {
        socket.off('data', onData);
        socket.off('error', reject);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

const REQUEST = 'GET /test HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n';

/** A connected TCP socket to 127.0.0.1:`port` (no Nagle). */
async function openSocket(port) {
  const s = connect({ port, host: '127.0.0.1', noDelay: true });
  await new Promise((r, j) => s.once('connect', r).once('error', j));
  return s;
}

const KEEP_ALIVE = 'GET /test HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n';

/** One keep-alive connection doing GET /test back to back until `end`: responses. */
async function keepAliveLoop(port, end) {
  const s = await openSocket(port);
  let buf = '';
  let done = 0;
  await new Promise((resolve, reject) => {
    const next = () => {
      if (now() >= end) return resolve();
      s.write(KEEP_ALIVE);
    };
    s.on('data', (d) => {
      buf += d;
      for (;;) {
        const head = buf.indexOf('\r\n\r\n');
        if (head < 0) return;
        const len = Number(/content-length: *(\d+)/i.exec(buf.slice(0, head))?.[1] ?? 0);
        if (buf.length < head + 4 + len) return;
        buf = buf.slice(head + 4 + len);
        done++;
        next();
      }
    });
    s.on('error', reject);
    s.on('close', resolve);
    next();
  });
  s.destroy();
  return done;
}

/** New TCP connection, one GET /test, read to the end: milliseconds. */
function getTest(port) {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const s = connect({ port, host: '127.0.0.1', noDelay: true });
    let got = '';
    s.on('connect', () => s.write(REQUEST));
    s.on('data', (d) => (got += d));
    s.on('end', () => {
      if (!got.includes('"ok"')) return reject(new Error(`bad answer: ${got.slice(0, 80)}`));
      resolve(now() - t0);
    });
    s.on('error', reject);
  });
}

async function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitPort(port) {
  for (let i = 0; i < 600; i++) {
    const ok = await new Promise((r) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`port ${port} never opened`);
}

/** Child processes of this bench, stopped by `stopAll()`. */
const children = [];
let stopping = false;

function start(cmd, args, extraEnv) {
  const c = spawn(cmd, args, {
    env: { ...process.env, ...extraEnv },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  c.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
  c.on('exit', (code) => {
    if (code && !stopping)
      process.stderr.write(`${path.basename(cmd)} ${args[0]} exited ${code}:\n${err}\n`);
  });
  children.push(c);
  return c;
}

/** Forks `script` with `args` as a child role (targets, drain, ...), stopped with the rest. */
function forkRole(script, args) {
  const c = fork(script, args, { stdio: 'inherit' });
  children.push(c);
  return c;
}

function stopAll() {
  stopping = true;
  for (const c of children) c.kill('SIGTERM');
}

/**
 * BENCH_PROF=DIR: run relay and worker under `node --cpu-prof` (profiles written at exit),
 * still through bin/gpu-sidecar (its GPU_SIDECAR_NODE_FLAGS: NODE_OPTIONS refuses --cpu-prof),
 * so that they run with the wrapper's flags and environment (GC, malloc) as when measured.
 */
function daemon(role, extraEnv) {
  const prof = process.env.BENCH_PROF;
  const profEnv = prof
    ? {
        GPU_SIDECAR_NODE_FLAGS: `--cpu-prof --cpu-prof-dir=${prof} --cpu-prof-name=${role}.cpuprofile`,
      }
    : {};
  return start(bin, [role, '--env-file', '/dev/null'], { ...extraEnv, ...profEnv });
}

/**
 * A spiped pair (encrypt end listening on the returned port) in front of `target`; its two
 * pids are added to `pids`. `extra`: more options for both ends (`-f`). `hop(port)` may put
 * something between the two ends (the WAN link): it gets the decrypt end's port and returns the
 * port the encrypt end should dial.
 */
async function spipedPair(key, target, pids, extra = [], hop = async (port) => port) {
  const d = await freePort();
  const e = await freePort();
  const common = ['-k', key, '-F', '-n', '0', ...extra];
  const dec = start('spiped', [
    '-d',
    '-s',
    `[127.0.0.1]:${d}`,
    '-t',
    `[127.0.0.1]:${target}`,
    ...common,
  ]);
  const via = await hop(d);
  const enc = start('spiped', [
    '-e',
    '-s',
    `[127.0.0.1]:${e}`,
    '-t',
    `[127.0.0.1]:${via}`,
    ...common,
  ]);
  pids.push(dec.pid, enc.pid);
  await waitPort(e);
  return e;
}

/**
 * CPU time (ms) the processes `pids` used so far, all threads (/proc/PID/task/T/schedstat, ns):
 * steadier than latency on a loaded machine, so it shows what a code change costs.
 */
function cpuMs(pids) {
  let ns = 0;
  for (const pid of pids) {
    try {
      for (const t of readdirSync(`/proc/${pid}/task`))
        ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // a process that ended
    }
  }
  return ns / 1e6;
}

/** A process's minor page faults so far, all threads (/proc/PID/stat, field 10). */
function minorFaults(pid) {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[7]);
  } catch {
    return 0; // a process that ended, as cpuMs counts it
  }
}

async function health(adminPort) {
  return (await fetch(`http://127.0.0.1:${adminPort}/healthz`)).json().catch(() => ({}));
}

/** Resolves once the relay at `adminPort` has an authenticated tunnel (10 s at most). */
async function waitTunnel(adminPort) {
  for (let i = 0; i < 200; i++) {
    if ((await health(adminPort)).tunnels?.some((x) => x.state === 'up')) return;
    await sleep(50);
  }
  throw new Error('the relay has no tunnel up after 10 s');
}

module.exports = {
  root,
  bin,
  sleep,
  now,
  pct,
  median,
  targetsRole,
  drainRole,
  receive,
  getTest,
  REQUEST,
  openSocket,
  keepAliveLoop,
  freePort,
  waitPort,
  start,
  forkRole,
  stopAll,
  daemon,
  spipedPair,
  cpuMs,
  minorFaults,
  health,
  waitTunnel,
};
