import { readFileSync } from 'node:fs';
import path from 'node:path';

// .env.template documents every variable the daemons read (the contract below), and nothing
// they ignore.
const template = readFileSync(path.join(__dirname, '..', '..', '.env.template'), 'utf8');
const documented = new Set([...template.matchAll(/^#?([A-Z][A-Z0-9_]+)=/gm)].map((m) => m[1]));

// TUNNEL_TARGETS: names the worker exposes to the tunnel besides `api` (README, "Tunnel").
// RELAY_FORWARDS is its relay-side counterpart (more listeners, each to a named target).
// QUEUE_UI: the bull-board page at /queues (read-only unless configured).
// API_HOSTS: the names the job API answers to (DNS rebinding and cross-origin guard).
// MAX_UPLOAD: the files of one submission together (POST /jobs, multipart).
const CONTRACT_VARIABLES = [
  'TUNNEL_TARGETS',
  'RELAY_FORWARDS',
  'QUEUE_UI',
  'API_HOSTS',
  'MAX_UPLOAD',
  'TUNNEL_KEY_FILE',
  'TUNNEL_LISTEN',
  'TUNNEL_CONNECT',
  'RELAY_LISTEN',
  'ADMIN_LISTEN',
  'API_LISTEN',
  'REDIS_URL',
  'DATA_FOLDER',
  'EXPERIMENTS_DIR',
  'GPU_DEVICES',
  'JOB_UID',
  'DOCKER_HOST',
  'LOG_LEVEL',
  'WORKER_NAME',
  'WORKER_CONCURRENCY',
  'GPU_SLOTS_PER_DEVICE',
  'GPU_SAMPLE_INTERVAL',
  'GPU_MAX_TEMP',
  'HEALTH_CONTAINERS',
  'RESULTS_TTL',
  'MIN_FREE_DISK',
  'TUNNEL_TLS_CERT',
  'TUNNEL_TLS_KEY',
  'HTTPS_PROXY',
];

describe('.env.template', () => {
  it('documents every variable of the configuration contract', () => {
    expect(CONTRACT_VARIABLES.filter((v) => !documented.has(v))).toEqual([]);
  });

  it('documents nothing that is not in the contract', () => {
    expect([...documented].filter((v) => !CONTRACT_VARIABLES.includes(v))).toEqual([]);
  });
});
