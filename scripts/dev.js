#!/usr/bin/env node
'use strict';
// `npm start`: the whole system on one machine with embedded defaults, for a first look.
// A key is generated under .local/ (git-ignored), the worker runs the sample experiments of
// examples/experiments that this machine can run (the Docker one only when Docker answers) with
// its own embedded Redis and data under .local/data, and the relay listens where a front's web
// app would call: http://127.0.0.1:8001. Each daemon's configuration is written to
// .local/worker.env and .local/relay.env and read from there, so `gpu-sidecar doctor` run in
// this folder checks exactly what they run with. Ctrl-C stops both.
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
const local = path.join(root, '.local');
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

const ports = { tunnel: 8080, api: 8000, relay: 8001, admin: 9464 };
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

const children = [];
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
  });
  child.stderr.on('data', (d) => {
    for (const line of d.toString().split('\n').filter(Boolean)) {
      try {
        const j = JSON.parse(line);
        const extra = j.err ? ` ${j.err.message ?? ''}` : '';
        process.stderr.write(`[${name}] ${j.msg}${extra}\n`);
      } catch {
        process.stderr.write(`[${name}] ${line}\n`);
      }
    }
  });
  child.on('exit', (code, signal) => {
    process.stderr.write(`[${name}] exited (${code ?? signal})\n`);
    stop(code ?? 1);
  });
  children.push(child);
}

process.stderr.write(
  `\ngpu-sidecar is starting. Try:\n  curl http://127.0.0.1:${ports.relay}/test\n` +
    `  curl -X POST -H 'content-type: application/json' -d '{"experiment":"hello","params":{"name":"lab"}}' http://127.0.0.1:${ports.relay}/jobs\n` +
    `Ctrl-C stops both daemons.\n\n`,
);

let stopping = false;
function stop(code) {
  if (stopping) return;
  stopping = true;
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  setTimeout(() => process.exit(code), 500).unref();
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));
