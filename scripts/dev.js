#!/usr/bin/env node
'use strict';
// `npm start`: the whole system on one machine with embedded defaults, for a first look.
// A key is generated under .local/ (git-ignored), the worker runs the sample experiments of
// examples/experiments that this machine can run (the Docker one only when Docker answers) with
// its own embedded Redis and data under .local/data, and the relay listens where a front's web
// app would call: http://127.0.0.1:8001. Each daemon's configuration is written to
// .local/worker.env and .local/relay.env and read from there, so `gpu-sidecar doctor` run in
// this folder checks exactly what they run with. Ctrl-C stops both.
// GPU_SIDECAR_DEV_PORTS=tunnel,api,relay,admin and GPU_SIDECAR_DEV_DIR (instead of .local) let
// a test run it beside another copy.
const { spawn, spawnSync } = require('node:child_process');
const {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const local = process.env.GPU_SIDECAR_DEV_DIR || path.join(root, '.local');
const bin = path.join(root, 'bin', 'gpu-sidecar');
const key = path.join(local, 'tunnel.key');
mkdirSync(local, { recursive: true });
if (!existsSync(key)) {
  const r = spawnSync(bin, ['keygen', key], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

/** Whether a Docker Engine answers at `host` (a unix socket; asked by a child, synchronously). */
function dockerAnswers(host) {
  if (!host.startsWith('unix://')) return true; // tcp://: the worker finds out and says so
  const ping =
    `require('http').get({socketPath:${JSON.stringify(host.slice('unix://'.length))},` +
    `path:'/_ping',timeout:2000},(r)=>process.exit(r.statusCode===200?0:1))` +
    `.on('error',()=>process.exit(1)).on('timeout',()=>process.exit(1))`;
  return spawnSync(process.execPath, ['-e', ping], { timeout: 5000 }).status === 0;
}

/**
 * The demo's experiments: all of examples/experiments when Docker answers, else the ones that
 * need no Docker, copied into .local/experiments (and the one left out named).
 */
function demoExperiments() {
  const examples = path.join(root, 'examples', 'experiments');
  const dockerHost = process.env.DOCKER_HOST || 'unix:///var/run/docker.sock';
  if (dockerAnswers(dockerHost)) return examples;
  const dir = path.join(local, 'experiments');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const skipped = [];
  for (const f of readdirSync(examples).filter((n) => /\.ya?ml$/.test(n))) {
    if (/^runner:\s*docker\s*$/m.test(readFileSync(path.join(examples, f), 'utf8')))
      skipped.push(f);
    else copyFileSync(path.join(examples, f), path.join(dir, f));
  }
  process.stderr.write(
    `No Docker Engine answers at ${dockerHost}: the demo runs without ${skipped.join(', ')}.\n`,
  );
  return dir;
}

const [tunnel, api, relay, admin] = (process.env.GPU_SIDECAR_DEV_PORTS || '8080,8000,8001,9464')
  .split(',')
  .map(Number);
const ports = { tunnel, api, relay, admin };
const hasGpu = spawnSync('nvidia-smi', ['-L']).status === 0;
const common = { TUNNEL_KEY_FILE: key, LOG_LEVEL: process.env.LOG_LEVEL ?? 'info' };
const daemons = {
  worker: {
    ...common,
    TUNNEL_LISTEN: `127.0.0.1:${ports.tunnel}`,
    API_LISTEN: `127.0.0.1:${ports.api}`,
    DATA_FOLDER: path.join(local, 'data'),
    EXPERIMENTS_DIR: demoExperiments(),
    GPU_DEVICES: process.env.GPU_DEVICES ?? (hasGpu ? 'all' : 'none'),
  },
  relay: {
    ...common,
    TUNNEL_CONNECT: `ws://127.0.0.1:${ports.tunnel}`,
    RELAY_LISTEN: `127.0.0.1:${ports.relay}`,
    ADMIN_LISTEN: `127.0.0.1:${ports.admin}`,
  },
};

/**
 * One log line of a daemon as a person reads it: the message, then its cause. The daemons log
 * pino JSON whose `err` is a string (`log.warn({ err: err.message }, ...)`) or a serialized
 * Error; either way what went wrong follows the message ("cannot subscribe to Docker events:
 * connect ENOENT /var/run/docker.sock"), as do `reason`, `detail` and `error` when a line has them.
 */
function formatLine(name, line) {
  let j;
  try {
    j = JSON.parse(line);
  } catch {
    return `[${name}] ${line}`;
  }
  if (typeof j !== 'object' || j === null || typeof j.msg !== 'string') return `[${name}] ${line}`;
  const level = j.level >= 50 ? 'ERROR ' : j.level >= 40 ? 'WARN ' : '';
  const causes = [j.err, j.reason, j.detail, j.error]
    .map((c) => (c && typeof c === 'object' ? c.message : c))
    .filter((c) => typeof c === 'string' && c !== '' && !j.msg.includes(c));
  return `[${name}] ${level}${j.msg}${causes.length ? `: ${causes.join('; ')}` : ''}`;
}

// The daemons run in their own process group (detached): a Ctrl-C on the terminal reaches this
// script only, which passes it on as one SIGTERM each. In the terminal's group they got the
// SIGINT and then this script's SIGTERM, took the second for an impatient "stop now" ("second
// signal: exiting now", exit 1), and cut their clean stop short.
const children = [];
let stopping = false;
let exitCode = 0;
for (const [name, vars] of Object.entries(daemons)) {
  // Its own env file, whatever a .env in this folder says; the file's values win over the
  // shell's (taken out of the child's environment), the shell's other variables pass.
  const file = path.join(local, `${name}.env`);
  writeFileSync(
    file,
    `# written by npm start (scripts/dev.js): what its ${name} runs with\n` +
      Object.entries(vars)
        .map(([k, v]) => `${k}=${v}\n`)
        .join(''),
  );
  const env = { ...process.env };
  for (const k of Object.keys(vars)) delete env[k];
  const child = spawn(bin, [name, '--env-file', file], {
    env,
    stdio: ['ignore', 'inherit', 'pipe'],
    detached: true,
  });
  let rest = '';
  child.stderr.on('data', (d) => {
    const lines = (rest + d.toString()).split('\n');
    rest = lines.pop();
    for (const line of lines.filter(Boolean)) process.stderr.write(`${formatLine(name, line)}\n`);
  });
  child.on('exit', (code, signal) => {
    if (rest) process.stderr.write(`${formatLine(name, rest)}\n`);
    process.stderr.write(`[${name}] exited (${code ?? signal})\n`);
    // One daemon ending by itself stops the other; the script's exit says whether all went well.
    if (code !== 0) exitCode = code ?? 1;
    stop();
    if (children.every((c) => c.exitCode !== null || c.signalCode !== null)) process.exit(exitCode);
  });
  children.push(child);
}

process.stderr.write(
  `\ngpu-sidecar is starting. Try:\n  curl http://127.0.0.1:${ports.relay}/test\n` +
    `  curl -X POST -H 'content-type: application/json' -d '{"experiment":"hello","params":{"name":"lab"}}' http://127.0.0.1:${ports.relay}/jobs\n` +
    `Ctrl-C stops both daemons.\n\n`,
);

/** SIGTERM once to each daemon still running; the script exits when the last one has. */
function stop() {
  if (stopping) return;
  stopping = true;
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
}

let firstSignalAt = 0;
function onSignal() {
  // npm passes its SIGINT on to this script, which the terminal signalled as well: signals
  // within a second of the first are that same Ctrl-C. A later one means "now": it is passed on
  // again, and a daemon stops at once on its second signal.
  const now = Date.now();
  if (!stopping) {
    firstSignalAt = now;
    return stop();
  }
  if (now - firstSignalAt < 1000) return;
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
// The terminal closing: stop the daemons too, since they are not in its process group.
process.on('SIGHUP', onSignal);
