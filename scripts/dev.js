#!/usr/bin/env node
'use strict';
// `npm start`: the whole system on one machine with embedded defaults, for a first look.
// A key is generated under .local/ (git-ignored), the worker runs the sample experiments of
// examples/experiments with its own embedded Redis and data under .local/data, and the relay
// listens where a front's web app would call: http://127.0.0.1:8001. Ctrl-C stops both.
const { spawn, spawnSync } = require('node:child_process');
const { existsSync, mkdirSync } = require('node:fs');
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

const ports = { tunnel: 8080, api: 8000, relay: 8001, admin: 9464 };
const hasGpu = spawnSync('nvidia-smi', ['-L']).status === 0;
const common = { ...process.env, TUNNEL_KEY_FILE: key, LOG_LEVEL: process.env.LOG_LEVEL ?? 'info' };
const daemons = {
  worker: {
    ...common,
    TUNNEL_LISTEN: `127.0.0.1:${ports.tunnel}`,
    API_LISTEN: `127.0.0.1:${ports.api}`,
    DATA_FOLDER: path.join(local, 'data'),
    EXPERIMENTS_DIR: path.join(root, 'examples', 'experiments'),
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
for (const [name, env] of Object.entries(daemons)) {
  // --env-file /dev/null: the embedded defaults, whatever a .env in this folder says.
  const child = spawn(bin, [name, '--env-file', '/dev/null'], {
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
