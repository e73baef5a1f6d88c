#!/usr/bin/env node
'use strict';
// `npm run bench:wan`: the tunnel where users live, across a network. The front and the GPU
// hosts are 5-50 ms apart, never on one machine; kernel netem is not available here, so an
// emulated link (scripts/bench/wan-link.js: one-way delay, a shared bottleneck with a bounded
// FIFO queue, TCP's handshake round trip for every new connection) sits between the front side
// and the GPU side of every path:
//
//   plain TCP    client ──link──▶ worker API / echo / bulk
//   spiped       client ─▶ spiped -e ──link──▶ spiped -d ─▶ the same targets (as packaged, and -f)
//   gpu-sidecar  client ─▶ relay ══link══▶ worker (one tunnel; RELAY_FORWARDS echo and bulk)
//
// Each path has its own link (all of that path's connections share it), measured in turn. For
// each link (BENCH_LINKS, default "20ms:1000mbit,50ms:100mbit": round trip and rate) it prints
// one table from one run:
//   - new connection + GET /test, p50 and p99;
//   - one bulk download while another stream of the same path is open (as a front page keeps an
//     event stream open): MB/s from its first byte;
//   - GET /test p50 and p99 (new connections) during that download;
//   - the same download with no stream open beside it, only those GET /tests, and their p99;
//   - 50 concurrent clients doing GET /test for BENCH_LOAD_MS: keep-alive (one connection each)
//     and new connections: requests/s.
// First it measures the emulator itself against its model (delay, rate, sharing between two
// connections, the handshake): `--selftest` runs only that and exits 1 when a figure is more
// than 5 % off. Asserts nothing else.
const { execFileSync, spawnSync } = require('node:child_process');
const { mkdtempSync, rmSync } = require('node:fs');
const { connect } = require('node:net');
const os = require('node:os');
const path = require('node:path');
const {
  root,
  bin,
  sleep,
  now,
  pct,
  targetsRole,
  drainRole,
  receive,
  getTest,
  freePort,
  waitPort,
  forkRole,
  stopAll,
  daemon,
  spipedPair,
  waitTunnel,
  openSocket,
  keepAliveLoop,
} = require('./common');
const { createLink, startLinkProxy } = require('./wan-link');

const env = (name, dflt) => Number(process.env[name] ?? dflt);
const N_NEW = env('BENCH_CONNECTIONS', 50);
const BULK_MS = env('BENCH_BULK_MS', 4000);
const LOAD_MS = env('BENCH_LOAD_MS', 3000);
const CONCURRENCY = env('BENCH_CONCURRENCY', 50);
const PATHS = process.env.BENCH_PATHS?.split(',');
const SELF = path.join(__dirname, 'wan.js');

/** "20ms:1000mbit" → { rttMs, rateBps (bytes/s), label }. */
function parseLink(spec) {
  const m = /^(\d+(?:\.\d+)?)ms:(\d+(?:\.\d+)?)(mbit|gbit)$/.exec(spec.trim());
  if (!m) throw new Error(`bad link '${spec}': write RTTms:RATEmbit, e.g. 20ms:1000mbit`);
  const bits = Number(m[2]) * (m[3] === 'gbit' ? 1e9 : 1e6);
  return { rttMs: Number(m[1]), rateBps: bits / 8, label: `RTT ${m[1]} ms, ${m[2]} ${m[3]}/s` };
}
const LINKS = (process.env.BENCH_LINKS ?? '20ms:1000mbit,50ms:100mbit').split(',').map(parseLink);

// ---------------------------------------------------------------- the emulator, in its own process

/**
 * The link role: holds the links and their proxies, so that their timers and copies run beside
 * the measuring process, not in it. Messages: {id, link: {name, rttMs, rateBps}} makes a link;
 * {id, proxy: {link, port}} a proxy across it to 127.0.0.1:port. Answers {id, port?}.
 */
function linkRole() {
  const links = new Map();
  process.on('message', async (m) => {
    if (m.link) {
      const { name, rttMs, rateBps } = m.link;
      // A router's queue of about one bandwidth-delay product.
      const queueBytes = Math.max(64 * 1024, Math.round((rateBps * rttMs) / 1000));
      links.set(name, createLink({ delayMs: rttMs / 2, rateBps, queueBytes }));
      process.send({ id: m.id });
    } else if (m.proxy) {
      const link = links.get(m.proxy.link);
      const proxy = await startLinkProxy({
        link,
        target: { host: '127.0.0.1', port: m.proxy.port },
      });
      process.send({ id: m.id, port: proxy.port });
    }
  });
  process.send({ ready: true });
}

/** The main process's handle on the link role. */
async function linkProcess() {
  const child = forkRole(SELF, ['link']);
  await new Promise((r) => child.once('message', r));
  let next = 1;
  const ask = (msg) =>
    new Promise((resolve) => {
      const id = next++;
      const on = (m) => {
        if (m.id !== id) return;
        child.off('message', on);
        resolve(m);
      };
      child.on('message', on);
      child.send({ id, ...msg });
    });
  return {
    link: (name, spec) => ask({ link: { name, rttMs: spec.rttMs, rateBps: spec.rateBps } }),
    proxy: async (link, port) => (await ask({ proxy: { link, port } })).port,
  };
}

// ---------------------------------------------------------------- measures (client side)

const PING = Buffer.from('ping');

/** Round trips of 4 bytes on one open connection to an echo: ms each. */
async function roundTrips(port, n) {
  const s = await openSocket(port);
  const t = [];
  for (let i = 0; i < n; i++) {
    const t0 = now();
    const got = receive(s, 4);
    s.write(PING);
    await got;
    t.push(now() - t0);
  }
  s.destroy();
  return t;
}

/** A new connection and a 4-byte echo: ms from connect() to the echo. */
async function connectEcho(port) {
  const t0 = now();
  const s = connect({ port, host: '127.0.0.1', noDelay: true });
  const got = receive(s, 4);
  s.write(PING);
  await got;
  s.destroy();
  return now() - t0;
}

/** Downloads from `port` in `n` processes at once for `ms`: each one's MB/s from its first byte. */
async function downloads(port, n, ms) {
  const drains = Array.from({ length: n }, () => forkRole(SELF, ['drain', String(port)]));
  // Measured from a common moment once every download runs, so that none has the link alone
  // in its figure (a forked reader starts tens of milliseconds after the one before).
  await sleep(Math.min(1000, ms / 4));
  for (const d of drains) d.send('mark');
  await sleep(ms);
  return Promise.all(
    drains.map(
      (d) =>
        new Promise((r) => {
          d.once('message', (m) => r(m.mbps));
          d.send('stop');
        }),
    ),
  );
}

/** Sequential new-connection GET /test for `ms`: latencies and errors. */
async function getTests(port, ms) {
  const lat = [];
  let errors = 0;
  const end = now() + ms;
  while (now() < end) {
    try {
      lat.push(await getTest(port));
    } catch {
      errors++;
    }
  }
  return { lat, errors };
}

/** `CONCURRENCY` clients for LOAD_MS, keep-alive or a new connection per request: req/s. */
async function load(port, keepAlive) {
  const t0 = now();
  const end = t0 + LOAD_MS;
  let n = 0;
  let errors = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      if (keepAlive) {
        // Not `n += await ...`: that reads n before the wait and loses the other clients' counts.
        const served = await keepAliveLoop(port, end).catch(() => (errors++, 0));
        n += served;
        return;
      }
      while (now() < end) {
        try {
          await getTest(port);
          n++;
        } catch {
          errors++;
        }
      }
    }),
  );
  return { rps: n / ((now() - t0) / 1000), errors };
}

// ---------------------------------------------------------------- self-test of the emulator

/** Measures one emulated link against its model; rows of [what, model, measured, error %]. */
async function selftest(links, spec, t) {
  const name = `selftest ${spec.label}`;
  await links.link(name, spec);
  const echo = await links.proxy(name, t.echo);
  const bulk = await links.proxy(name, t.bulk);
  // What the link adds is compared with the model: the same measure straight to the echo on
  // loopback (a few hundred microseconds of processes and hops) is taken off.
  const rttOf = async (port) => pct((await roundTrips(port, 30)).slice(5), 50);
  const freshOf = async (port) => {
    const xs = [];
    for (let i = 0; i < 10; i++) xs.push(await connectEcho(port));
    return pct(xs, 50);
  };
  const rtt = (await rttOf(echo)) - (await rttOf(t.echo));
  // A new connection: the handshake's round trip, then the echo's.
  const fresh = (await freshOf(echo)) - (await freshOf(t.echo));
  const mb = spec.rateBps / 1e6;
  const [one] = await downloads(bulk, 1, 3000);
  const two = await downloads(bulk, 2, 3000);
  const rows = [
    ['round trip on an open connection, added to loopback', spec.rttMs, rtt, 'ms'],
    ['new connection + echo (2 round trips), added to loopback', 2 * spec.rttMs, fresh, 'ms'],
    ['one download', mb, one, 'MB/s'],
    ['two downloads at once, together', mb, two[0] + two[1], 'MB/s'],
    ['two downloads at once, each', mb / 2, Math.min(...two), 'MB/s'],
  ];
  return rows.map(([what, model, got, unit]) => ({
    what,
    model,
    got,
    unit,
    errPct: (Math.abs(got - model) / model) * 100,
  }));
}

function printSelftest(spec, rows) {
  console.log(`\nemulator self-test, ${spec.label}:`);
  console.log('| what | model | measured | off by |');
  console.log('|---|---|---|---|');
  for (const r of rows) {
    const f = (x) => `${x.toFixed(r.unit === 'ms' ? 1 : 1)} ${r.unit}`;
    console.log(`| ${r.what} | ${f(r.model)} | ${f(r.got)} | ${r.errPct.toFixed(1)} % |`);
  }
}

// ---------------------------------------------------------------- main

async function main() {
  const selftestOnly = process.argv.includes('--selftest');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gsc-wan-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const targets = forkRole(SELF, ['targets']);
  const t = await new Promise((r) => targets.once('message', r));
  const links = await linkProcess();

  let faithful = true;
  for (const spec of LINKS) {
    const rows = await selftest(links, spec, t);
    printSelftest(spec, rows);
    if (rows.some((r) => r.errPct > 5)) faithful = false;
  }
  if (!faithful)
    console.log(
      '\nthe emulator is more than 5 % off its model on this machine now: read the tables below with that in mind',
    );
  if (selftestOnly) {
    process.exitCode = faithful ? 0 : 1;
    return;
  }

  const key = path.join(dir, 'key');
  execFileSync(bin, ['keygen', key], { stdio: 'ignore' });
  const p = { api: await freePort(), tunnel: await freePort() };
  daemon('worker', {
    TUNNEL_KEY_FILE: key,
    TUNNEL_LISTEN: `127.0.0.1:${p.tunnel}`,
    API_LISTEN: `127.0.0.1:${p.api}`,
    TUNNEL_TARGETS: `echo=127.0.0.1:${t.echo},bulk=127.0.0.1:${t.bulk}`,
    DATA_FOLDER: path.join(dir, 'data'),
    EXPERIMENTS_DIR: path.join(root, 'examples', 'experiments'),
    GPU_DEVICES: 'none',
    LOG_LEVEL: 'warn',
  });
  await waitPort(p.api);
  const hasSpiped = spawnSync('spiped', ['-v']).status === 0;

  for (const spec of LINKS) {
    const linkOf = async (pathName) => {
      const name = `${pathName} ${spec.label}`;
      await links.link(name, spec);
      return (port) => links.proxy(name, port);
    };
    const paths = [];
    {
      const via = await linkOf('plain TCP');
      paths.push({
        name: 'plain TCP',
        api: await via(p.api),
        echo: await via(t.echo),
        bulk: await via(t.bulk),
      });
    }
    if (hasSpiped)
      for (const [name, extra] of [
        ['spiped', []],
        ['spiped -f', ['-f']],
      ]) {
        const via = await linkOf(name);
        paths.push({
          name,
          api: await spipedPair(key, p.api, [], extra, via),
          echo: await spipedPair(key, t.echo, [], extra, via),
          bulk: await spipedPair(key, t.bulk, [], extra, via),
        });
      }
    {
      const via = await linkOf('gpu-sidecar');
      const r = {
        relay: await freePort(),
        echo: await freePort(),
        bulk: await freePort(),
        admin: await freePort(),
      };
      daemon('relay', {
        TUNNEL_KEY_FILE: key,
        TUNNEL_CONNECT: `ws://127.0.0.1:${await via(p.tunnel)}`,
        RELAY_LISTEN: `127.0.0.1:${r.relay}`,
        RELAY_FORWARDS: `echo=127.0.0.1:${r.echo},bulk=127.0.0.1:${r.bulk}`,
        // The bulk source sends at once, before its client says anything: a server-first forward
        // (README, "Relay connections"), else the relay waits for the client's first byte.
        RELAY_FORWARDS_SERVER_FIRST: 'bulk',
        ADMIN_LISTEN: `127.0.0.1:${r.admin}`,
        LOG_LEVEL: 'warn',
      });
      await waitPort(r.admin);
      await waitTunnel(r.admin);
      paths.push({ name: 'gpu-sidecar', api: r.relay, echo: r.echo, bulk: r.bulk });
    }
    if (PATHS) paths.splice(0, paths.length, ...paths.filter((x) => PATHS.includes(x.name)));

    const results = {};
    for (const x of paths) {
      for (let i = 0; i < 5; i++) await getTest(x.api); // warm the path (and the JIT) up
      const fresh = [];
      for (let i = 0; i < N_NEW; i++) fresh.push(await getTest(x.api));
      // Another stream of the same path stays open during the download, as a page's event
      // stream does: through the tunnel, the download then does not have the session alone.
      // It says something first, as an EventSource's GET does: the relay opens a forward's
      // stream at the client's first byte, so a silent connection would hold none.
      const other = await openSocket(x.echo);
      other.write('x');
      const during = getTests(x.api, BULK_MS - 500);
      const [mbps] = await downloads(x.bulk, 1, BULK_MS);
      const under = await during;
      other.destroy();
      // The same download with no stream kept open beside it, only the short GET /tests (a
      // script fetching a result while a page polls): through the tunnel each request joins
      // the download's session for a moment, which must not cost the download its window.
      const polled = getTests(x.api, BULK_MS - 500);
      const [mbpsPolled] = await downloads(x.bulk, 1, BULK_MS);
      const underPolled = await polled;
      const keepAlive = await load(x.api, true);
      const newConn = await load(x.api, false);
      results[x.name] = {
        p50: pct(fresh, 50),
        p99: pct(fresh, 99),
        mbps,
        underP50: pct(under.lat, 50),
        underP99: pct(under.lat, 99),
        underErrors: under.errors + underPolled.errors,
        mbpsPolled,
        polledP99: pct(underPolled.lat, 99),
        keepAlive,
        newConn,
      };
      process.stderr.write(`${spec.label}: ${x.name} done\n`);
    }
    printTable(spec, paths, results);
  }
}

function printTable(spec, paths, res) {
  const cols = paths.map((x) => x.name);
  const ours = res['gpu-sidecar'];
  const sp = res.spiped;
  const rate = spec.rateBps / 1e6;
  const ms = (x) => (x === undefined ? 'n/a' : `${x.toFixed(1)} ms`);
  const mbs = (x) => `${x.toFixed(1)} MB/s`;
  const rps = (x) => `${x.toFixed(0)}/s`;
  const verdict = (ok) => (!ours || !sp ? 'n/a' : ok() ? 'met' : 'MISSED');
  const rows = [
    [
      'new connection + GET /test, p50',
      (r) => ms(r.p50),
      '≤ 0.35x spiped',
      verdict(() => ours.p50 <= 0.35 * sp.p50),
    ],
    ['new connection + GET /test, p99', (r) => ms(r.p99), '', ''],
    [
      'one download, another stream open',
      (r) => mbs(r.mbps),
      `≥ 0.9x link (${(0.9 * rate).toFixed(1)} MB/s) and ≥ spiped`,
      verdict(() => ours.mbps >= 0.9 * rate && ours.mbps >= sp.mbps),
    ],
    ['GET /test p50 during that download', (r) => ms(r.underP50), '', ''],
    [
      'GET /test p99 during that download',
      (r) => ms(r.underP99),
      `≤ spiped's + 1 RTT`,
      verdict(() => ours.underP99 <= sp.underP99 + spec.rttMs),
    ],
    [
      'one download, only GET /tests beside it',
      (r) => mbs(r.mbpsPolled),
      `≥ 0.9x link and ≥ spiped`,
      verdict(() => ours.mbpsPolled >= 0.9 * rate && ours.mbpsPolled >= sp.mbpsPolled),
    ],
    [
      'GET /test p99 during that download',
      (r) => ms(r.polledP99),
      `≤ spiped's + 1 RTT`,
      verdict(() => ours.polledP99 <= sp.polledP99 + spec.rttMs),
    ],
    [`${CONCURRENCY} clients, keep-alive GET /test`, (r) => rps(r.keepAlive.rps), '', ''],
    [
      `${CONCURRENCY} clients, new connection per GET /test`,
      (r) => rps(r.newConn.rps),
      '≥ 2x spiped',
      verdict(() => ours.newConn.rps >= 2 * sp.newConn.rps),
    ],
  ];
  console.log(
    `\ngpu-sidecar across an emulated link: ${spec.label}; ${os.cpus().length} cores, load ` +
      `${os.loadavg()[0].toFixed(1)}, node ${process.version}\n`,
  );
  console.log(`| measure | ${cols.join(' | ')} | target | |`);
  console.log(`|---|${cols.map(() => '---|').join('')}---|---|`);
  for (const [label, f, target, v] of rows)
    console.log(`| ${label} | ${cols.map((c) => f(res[c])).join(' | ')} | ${target} | ${v} |`);
  const errs = cols.map((c) => {
    const r = res[c];
    return `${c} ${r.underErrors + r.keepAlive.errors + r.newConn.errors}`;
  });
  console.log(`\nrequest errors: ${errs.join(', ')}`);
}

if (process.argv[2] === 'targets') targetsRole();
else if (process.argv[2] === 'drain') drainRole(Number(process.argv[3]));
else if (process.argv[2] === 'link') linkRole();
else
  main()
    .catch((err) => {
      console.error(err);
      process.exitCode = 1;
    })
    .finally(stopAll);
