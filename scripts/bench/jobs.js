#!/usr/bin/env node
'use strict';
// `npm run bench:jobs`: what the job system costs per job, from one run, beside raw BullMQ on the
// same Redis. It starts a private redis-server (AOF, everysec, as the embedded one) and the built
// worker (REDIS_URL of that Redis, GPU_DEVICES=none), and talks HTTP to the worker's API_LISTEN
// directly. Through the relay and tunnel comes later: that path adds the tunnel's round trip
// (see scripts/bench/tunnel.js) to each request, not to the worker's own overhead measured here.
//
// Rows:
// - submit→running: POST /jobs to the record's startedAt, one job at a time, a slot always free.
// - end to end: POST /jobs until the SSE stream reports `succeeded`, minus the median time to
//   spawn and reap `true` here (the process's own run time): the daemon's overhead per job.
// - throughput: N no-op jobs submitted 16 at a time with WORKER_CONCURRENCY=8, until all succeeded.
// - raw BullMQ: add→completed of a no-op processor (and of one that spawns `true`) on the same
//   Redis, sequential latency and throughput with concurrency 8.
// - scale-out: short jobs (sleep 0.1 s) with one worker, then with two on the same Redis.
// - Docker (when an engine answers at GPU_SIDECAR_TEST_DOCKER_HOST or DOCKER_HOST): a busybox job
//   (`runner: docker`, `true`) from POST /jobs to the container's `start` event (Docker's own
//   clock, `docker events`), beside `docker run --rm --network none` of the same image from the
//   CLI's launch to its `start` event, alternating, in the same run; and both to the end
//   (job succeeded via SSE / the CLI exited). Target: the worker at most 1.2x `docker run`.
const { spawn, spawnSync, execFileSync } = require('node:child_process');
const { mkdtempSync, mkdirSync, writeFileSync, rmSync } = require('node:fs');
const { createServer } = require('node:net');
const { tmpdir } = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..', '..');
const bin = path.join(root, 'bin', 'gpu-sidecar');
const LAT_N = Number(process.env.BENCH_LATENCY_JOBS ?? 200);
const TP_N = Number(process.env.BENCH_THROUGHPUT_JOBS ?? 500);
const CONCURRENCY = 8;
// Scale-out row: jobs that sleep this long, so slots (not this 2-core machine's CPU) bound them.
const SHORT_S = 0.1;
const SCALE_N = Number(process.env.BENCH_SCALE_JOBS ?? 240);
const DOCKER_N = Number(process.env.BENCH_DOCKER_JOBS ?? 30);
const DOCKER_HOST = process.env.GPU_SIDECAR_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST;
const DOCKER_IMAGE = process.env.BENCH_DOCKER_IMAGE ?? 'gpu-sidecar-test:latest';

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ms = (x) => `${x.toFixed(1)} ms`;

async function startRedis(dir) {
  const port = await freePort();
  execFileSync('redis-server', [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--appendonly',
    'yes',
    '--appendfsync',
    'everysec',
    '--save',
    '',
    '--maxmemory-policy',
    'noeviction',
    '--daemonize',
    'yes',
    '--pidfile',
    path.join(dir, 'redis.pid'),
    '--logfile',
    path.join(dir, 'redis.log'),
  ]);
  for (let i = 0; i < 100; i++) {
    if (
      spawnSync('redis-cli', ['-p', String(port), 'ping'])
        .stdout?.toString()
        .includes('PONG')
    )
      return port;
    await sleep(50);
  }
  throw new Error('redis-server did not start');
}

async function startWorker(dir, redisUrl, name = 'bench-1') {
  const exp = path.join(dir, 'experiments');
  mkdirSync(exp, { recursive: true });
  writeFileSync(
    path.join(exp, 'noop.yaml'),
    'name: noop\nrunner: process\ncommand: ["true"]\nparams: { type: object }\n',
  );
  writeFileSync(
    path.join(exp, 'short.yaml'),
    `name: short\nrunner: process\ncommand: ["sleep", "${SHORT_S}"]\nparams: { type: object }\n`,
  );
  writeFileSync(
    path.join(exp, 'dock.yaml'),
    `name: dock\nrunner: docker\nimage: ${DOCKER_IMAGE}\ncommand: ["true"]\nparams: { type: object }\n`,
  );
  const key = path.join(dir, 'key');
  spawnSync(bin, ['keygen', key]);
  const apiPort = await freePort();
  const child = spawn(bin, ['worker'], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME ?? '/tmp',
      TUNNEL_KEY_FILE: key,
      TUNNEL_LISTEN: `127.0.0.1:${await freePort()}`,
      API_LISTEN: `127.0.0.1:${apiPort}`,
      REDIS_URL: redisUrl,
      DATA_FOLDER: path.join(dir, 'data'),
      EXPERIMENTS_DIR: exp,
      GPU_DEVICES: 'none',
      WORKER_CONCURRENCY: String(CONCURRENCY),
      WORKER_NAME: name,
      LOG_LEVEL: 'warn',
      ...(DOCKER_HOST ? { DOCKER_HOST } : {}),
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const base = `http://127.0.0.1:${apiPort}`;
  for (let i = 0; i < 300; i++) {
    try {
      if ((await fetch(`${base}/test`)).ok) return { child, base };
    } catch {
      /* not yet */
    }
    await sleep(100);
  }
  throw new Error(`worker did not start:\n${err}`);
}

const submit = async (base, experiment = 'noop') => {
  const r = await fetch(`${base}/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ experiment, params: {} }),
  });
  if (r.status !== 201) throw new Error(`submit: ${r.status} ${await r.text()}`);
  return (await r.json()).id;
};

/** Resolves with performance.now() when the SSE stream reports a final state. */
async function untilEnd(base, id) {
  const res = await fetch(`${base}/jobs/${id}/events`);
  const dec = new (require('node:util').TextDecoder)();
  let buf = '';
  for await (const chunk of res.body) {
    buf += dec.decode(chunk);
    if (/"state":"(succeeded|failed|cancelled)"/.test(buf)) {
      const t = performance.now();
      const last = /"state":"(\w+)"[^\n]*$/.exec(
        buf
          .trim()
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .pop(),
      );
      return { t, state: last?.[1] };
    }
  }
  throw new Error('events ended early');
}

async function viaWorker(base) {
  // warm-up
  for (let i = 0; i < 20; i++) await untilEnd(base, await submit(base));
  const toRunning = [];
  const e2e = [];
  const inside = [];
  for (let i = 0; i < LAT_N; i++) {
    const wall0 = Date.now();
    const t0 = performance.now();
    const id = await submit(base);
    const end = await untilEnd(base, id);
    const rec = await (await fetch(`${base}/jobs/${id}`)).json();
    toRunning.push(Date.parse(rec.startedAt) - wall0);
    e2e.push(end.t - t0);
    inside.push(Date.parse(rec.finishedAt) - Date.parse(rec.createdAt));
  }
  const t0 = performance.now();
  let next = 0;
  const ids = [];
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < TP_N) {
        next++;
        ids.push(await submit(base));
      }
    }),
  );
  // Jobs finish roughly in order: wait for each in turn (one cheap GET at a time).
  for (const id of ids) {
    for (;;) {
      const rec = await (await fetch(`${base}/jobs/${id}`)).json();
      if (rec.state === 'succeeded') break;
      if (rec.state !== 'queued' && rec.state !== 'running')
        throw new Error(`job ${id} ${rec.state}`);
      await sleep(5);
    }
  }
  const tp = TP_N / ((performance.now() - t0) / 1000);
  return { toRunning, e2e, inside, tp };
}

/** Jobs/s of `n` jobs of `experiment`, submitted 16 at a time to `base`, until all succeeded. */
async function throughput(base, experiment, n) {
  const t0 = performance.now();
  let next = 0;
  const ids = [];
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < n) {
        next++;
        ids.push(await submit(base, experiment));
      }
    }),
  );
  const workers = new Set();
  for (const id of ids) {
    for (;;) {
      const rec = await (await fetch(`${base}/jobs/${id}`)).json();
      if (rec.state === 'succeeded') {
        workers.add(rec.worker);
        break;
      }
      if (rec.state !== 'queued' && rec.state !== 'running')
        throw new Error(`job ${id} ${rec.state}`);
      await sleep(5);
    }
  }
  return { tp: n / ((performance.now() - t0) / 1000), workers: workers.size };
}

async function rawBull(redisPort, withSpawn) {
  const { Queue, Worker, QueueEvents } = require('bullmq');
  const connection = { host: '127.0.0.1', port: redisPort, maxRetriesPerRequest: null };
  const name = `bench-raw-${withSpawn ? 'spawn' : 'noop'}`;
  const q = new Queue(name, { connection });
  const events = new QueueEvents(name, { connection });
  await events.waitUntilReady();
  const proc = withSpawn
    ? () => new Promise((res) => spawn('true').on('close', () => res()))
    : async () => undefined;
  const w = new Worker(name, proc, { connection, concurrency: CONCURRENCY });
  await w.waitUntilReady();
  const opts = { removeOnComplete: { count: 1000 }, removeOnFail: { count: 1000 } };
  const lat = [];
  for (let i = 0; i < LAT_N + 20; i++) {
    const t0 = performance.now();
    const job = await q.add('j', {}, opts);
    await job.waitUntilFinished(events);
    if (i >= 20) lat.push(performance.now() - t0);
  }
  const t0 = performance.now();
  let done = 0;
  const all = new Promise((res) => w.on('completed', () => ++done >= TP_N && res()));
  await q.addBulk(Array.from({ length: TP_N }, () => ({ name: 'j', data: {}, opts })));
  await all;
  const tp = TP_N / ((performance.now() - t0) / 1000);
  await w.close();
  await events.close();
  await q.close();
  return { lat, tp };
}

function spawnTime() {
  return new Promise((resolve) => {
    const xs = [];
    const once = () => {
      const t0 = performance.now();
      spawn('true').on('close', () => {
        xs.push(performance.now() - t0);
        if (xs.length < 100) once();
        else resolve(pct(xs, 50));
      });
    };
    once();
  });
}

/** Why the Docker rows cannot run here, or undefined (making the busybox image if missing). */
function dockerProblem() {
  if (!DOCKER_HOST) return 'no GPU_SIDECAR_TEST_DOCKER_HOST or DOCKER_HOST';
  const env = { ...process.env, DOCKER_HOST };
  const info = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { env });
  if (info.status !== 0) return `docker info: ${String(info.stderr || info.error).trim()}`;
  if (spawnSync('docker', ['image', 'inspect', DOCKER_IMAGE], { env }).status !== 0) {
    const made = spawnSync(path.join(root, 'scripts', 'make-test-image.sh'), [DOCKER_IMAGE], {
      env,
    });
    if (made.status !== 0) return `no image ${DOCKER_IMAGE}: ${String(made.stderr).trim()}`;
  }
  return undefined;
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable with Docker's timeNano. */
const wallMs = () => performance.timeOrigin + performance.now();

/** `docker events` for container starts: resolves start times by job id or container name. */
function startEvents() {
  const child = spawn(
    'docker',
    ['events', '--format', '{{json .}}', '--filter', 'type=container', '--filter', 'event=start'],
    { env: { ...process.env, DOCKER_HOST }, stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const seen = new Map();
  const waiting = new Map();
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        const e = JSON.parse(line);
        const attrs = e.Actor?.Attributes ?? {};
        const t = Number(BigInt(e.timeNano) / 1000n) / 1000;
        for (const key of [attrs['gpu-sidecar.job'], attrs.name].filter(Boolean)) {
          seen.set(key, t);
          waiting.get(key)?.(t);
        }
      } catch {
        /* not an event line */
      }
    }
  });
  return {
    ready: sleep(500),
    at: (key) =>
      seen.has(key)
        ? Promise.resolve(seen.get(key))
        : new Promise((resolve) => waiting.set(key, resolve)),
    stop: () => child.kill(),
  };
}

async function viaDocker(base) {
  const events = startEvents();
  await events.ready;
  const env = { ...process.env, DOCKER_HOST };
  const worker = { toStart: [], toEnd: [] };
  const cli = { toStart: [], toEnd: [] };
  try {
    for (let i = 0; i < DOCKER_N + 3; i++) {
      const keep = i >= 3; // warm-up
      let t0 = wallMs();
      const id = await submit(base, 'dock');
      const end = await untilEnd(base, id);
      if (end.state !== 'succeeded') throw new Error(`docker job ${id} ${end.state}`);
      const t1 = wallMs();
      if (keep) {
        worker.toStart.push((await events.at(id)) - t0);
        worker.toEnd.push(t1 - t0);
      }
      const name = `gsc-bench-run-${process.pid}-${i}`;
      t0 = wallMs();
      await new Promise((resolve, reject) =>
        spawn(
          'docker',
          ['run', '--rm', '--name', name, '--network', 'none', DOCKER_IMAGE, 'true'],
          {
            env,
            stdio: 'ignore',
          },
        ).on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`docker run: ${code}`)))),
      );
      const t2 = wallMs();
      if (keep) {
        cli.toStart.push((await events.at(name)) - t0);
        cli.toEnd.push(t2 - t0);
      }
    }
  } finally {
    events.stop();
  }
  return { worker, cli };
}

async function main() {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-bench-jobs-'));
  const redisDir = path.join(dir, 'redis');
  mkdirSync(redisDir);
  const port = await startRedis(redisDir);
  let worker;
  try {
    worker = await startWorker(dir, `redis://127.0.0.1:${port}`);
    const spawnMs = await spawnTime();
    const w = await viaWorker(worker.base);
    const raw = await rawBull(port, false);
    const rawSpawn = await rawBull(port, true);
    const noDocker = dockerProblem();
    const docker = noDocker ? undefined : await viaDocker(worker.base);
    // Scale-out (issue 10): the same short jobs with one worker, then with a second one on the
    // same Redis and DATA_FOLDER (a separate process and WORKER_NAME), submitted to the first.
    const one = await throughput(worker.base, 'short', SCALE_N);
    const second = await startWorker(dir, `redis://127.0.0.1:${port}`, 'bench-2');
    let two;
    try {
      two = await throughput(worker.base, 'short', SCALE_N);
    } finally {
      second.child.kill('SIGTERM');
      await new Promise((r) => second.child.on('exit', r));
    }
    const overhead = w.e2e.map((x) => x - spawnMs);
    const rows = [
      ['what', 'p50', 'p99', 'throughput'],
      [
        'worker API: submit→running (free slot)',
        ms(pct(w.toRunning, 50)),
        ms(pct(w.toRunning, 99)),
        '',
      ],
      [
        'worker API: submit→succeeded (SSE), no-op process',
        ms(pct(w.e2e, 50)),
        ms(pct(w.e2e, 99)),
        `${w.tp.toFixed(0)} jobs/s`,
      ],
      [
        '  inside the worker: record createdAt→finishedAt',
        ms(pct(w.inside, 50)),
        ms(pct(w.inside, 99)),
        '',
      ],
      [
        `worker overhead per job (end to end − spawn of true, ${spawnMs.toFixed(1)} ms)`,
        ms(pct(overhead, 50)),
        ms(pct(overhead, 99)),
        '',
      ],
      [
        'raw BullMQ add→completed, no-op',
        ms(pct(raw.lat, 50)),
        ms(pct(raw.lat, 99)),
        `${raw.tp.toFixed(0)} jobs/s`,
      ],
      [
        'raw BullMQ add→completed, spawn `true`',
        ms(pct(rawSpawn.lat, 50)),
        ms(pct(rawSpawn.lat, 99)),
        `${rawSpawn.tp.toFixed(0)} jobs/s`,
      ],
    ];
    if (docker) {
      const ratio = (a, b) => `${(pct(a, 50) / pct(b, 50)).toFixed(2)}x docker run`;
      rows.push(
        [
          'worker API: submit→container started, busybox `true`',
          ms(pct(docker.worker.toStart, 50)),
          ms(pct(docker.worker.toStart, 99)),
          ratio(docker.worker.toStart, docker.cli.toStart),
        ],
        [
          '  docker run --rm (CLI): launch→container started',
          ms(pct(docker.cli.toStart, 50)),
          ms(pct(docker.cli.toStart, 99)),
          '',
        ],
        [
          'worker API: submit→succeeded (SSE), busybox `true`',
          ms(pct(docker.worker.toEnd, 50)),
          ms(pct(docker.worker.toEnd, 99)),
          ratio(docker.worker.toEnd, docker.cli.toEnd),
        ],
        [
          '  docker run --rm (CLI): launch→exited',
          ms(pct(docker.cli.toEnd, 50)),
          ms(pct(docker.cli.toEnd, 99)),
          '',
        ],
      );
    }
    rows.push(
      [
        `scale-out: ${SCALE_N} jobs of sleep ${SHORT_S}s, 1 worker × ${CONCURRENCY} slots`,
        '',
        '',
        `${one.tp.toFixed(0)} jobs/s`,
      ],
      [
        `scale-out: the same, 2 workers × ${CONCURRENCY} slots (ran on ${two.workers})`,
        '',
        '',
        `${two.tp.toFixed(0)} jobs/s (${(two.tp / one.tp).toFixed(2)}x)`,
      ],
    );
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    console.log(
      `\njobs bench: ${LAT_N} sequential jobs for latency, ${TP_N} for throughput, concurrency ${CONCURRENCY}, same Redis (AOF everysec)\n`,
    );
    for (const [i, r] of rows.entries()) {
      console.log(
        r.map((c, j) => (j === 0 ? c.padEnd(widths[j]) : c.padStart(widths[j]))).join('  '),
      );
      if (i === 0) console.log(widths.map((n) => '-'.repeat(n)).join('  '));
    }
    console.log('\ntargets (issue 5): submit→running p50 ≤ 10 ms; overhead per job p50 ≤ 15 ms');
    console.log(
      docker
        ? `targets (issue 6): submit→container started ≤ 1.2x docker run (the ratio in the last column; ${DOCKER_N} of each, alternating)`
        : `Docker rows skipped: ${noDocker}`,
    );
  } finally {
    if (worker) {
      worker.child.kill('SIGTERM');
      await new Promise((r) => worker.child.on('exit', r));
    }
    spawnSync('redis-cli', ['-p', String(port), 'shutdown', 'nosave']);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
