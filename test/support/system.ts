import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, runCli, type DaemonProcess } from './daemon';
import { freePort } from './ports';

/** Ports and folders of one relay + worker pair started by `startPair`. */
export interface Pair {
  dir: string;
  keyFile: string;
  ports: { tunnel: number; api: number; relay: number; admin: number };
  relay: DaemonProcess;
  worker: DaemonProcess;
  workerEnv: Record<string, string>;
  relayEnv: Record<string, string>;
  /**
   * Starts the worker again with the same configuration (after a stop or kill) and waits until
   * the relay has a new tunnel session to it.
   */
  restartWorker(): Promise<DaemonProcess>;
  /**
   * Stops both (SIGTERM). With `killAfterMs`, the relay first, then a worker that has not
   * exited by then is killed: its jobs' teardown under an attack may outlast a test's patience.
   */
  stop(opts?: { killAfterMs?: number }): Promise<void>;
}

/** Writes a new key file with `gpu-sidecar keygen` into `dir`. */
export function keygen(dir: string, name = 'tunnel.key'): string {
  const file = path.join(dir, name);
  execFileSync(BIN, ['keygen', file], {
    env: { PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` },
  });
  return file;
}

/**
 * Starts a worker and a relay (built daemons, as processes) on random loopback ports with a new
 * key, and waits until the relay's tunnel is up (its /healthz says ok).
 */
export async function startPair(
  opts: { worker?: Record<string, string>; relay?: Record<string, string> } = {},
): Promise<Pair> {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-pair-'));
  const keyFile = keygen(dir);
  const ports = {
    tunnel: await freePort(),
    api: await freePort(),
    relay: await freePort(),
    admin: await freePort(),
  };
  mkdirSync(path.join(dir, 'experiments'));
  const workerEnv = {
    TUNNEL_KEY_FILE: keyFile,
    TUNNEL_LISTEN: `127.0.0.1:${ports.tunnel}`,
    API_LISTEN: `127.0.0.1:${ports.api}`,
    DATA_FOLDER: path.join(dir, 'data'),
    EXPERIMENTS_DIR: path.join(dir, 'experiments'),
    GPU_DEVICES: 'none',
    LOG_LEVEL: 'info',
    ...opts.worker,
  };
  const relayEnv = {
    TUNNEL_KEY_FILE: keyFile,
    TUNNEL_CONNECT: `ws://127.0.0.1:${ports.tunnel}`,
    RELAY_LISTEN: `127.0.0.1:${ports.relay}`,
    ADMIN_LISTEN: `127.0.0.1:${ports.admin}`,
    LOG_LEVEL: 'info',
    ...opts.relay,
  };
  const pair: Pair = {
    dir,
    keyFile,
    ports,
    workerEnv,
    relayEnv,
    worker: runCli(['worker'], workerEnv, dir),
    relay: undefined as unknown as DaemonProcess,
    restartWorker: async () => {
      // The relay reconnects with backoff: wait for a session to the new worker, so that a
      // caller's next request through the relay does not meet "no tunnel" (closed at once).
      const before = (await relayHealth(ports.admin)).tunnels[0];
      const stale = before?.state === 'up' ? before.session : undefined;
      pair.worker = runCli(['worker'], workerEnv, dir);
      await pair.worker.waitForLog('worker ready');
      await waitUntil('relay tunnel to the restarted worker', async () => {
        const t = (await relayHealth(ports.admin)).tunnels[0];
        return t?.state === 'up' && t.session !== stale;
      });
      return pair.worker;
    },
    stop: async ({ killAfterMs } = {}) => {
      if (killAfterMs === undefined) {
        await Promise.all([pair.relay.stop(), pair.worker.stop()]);
        return;
      }
      await pair.relay.stop();
      const stopped = pair.worker.stop();
      const timer = setTimeout(() => pair.worker.child.kill('SIGKILL'), killAfterMs);
      await stopped;
      clearTimeout(timer);
    },
  };
  try {
    await pair.worker.waitForLog('worker ready');
    pair.relay = runCli(['relay'], relayEnv, dir);
    await pair.relay.waitForLog('relay ready');
    await waitForTunnel(ports.admin);
  } catch (err) {
    // A pair that did not come up leaves no daemon behind for the rest of the run.
    await Promise.all([pair.relay?.stop('SIGKILL'), pair.worker.stop('SIGKILL')]);
    throw err;
  }
  return pair;
}

/** Resolves once the relay at this admin port reports an authenticated tunnel. */
export async function waitForTunnel(adminPort: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${adminPort}/healthz`);
      if (res.status === 200) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`no tunnel up after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The value of one Prometheus sample in a /metrics text, matched by name and label subset. */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/** One tunnel as the relay's /healthz lists it. */
export interface TunnelHealth {
  url: string;
  state: 'connecting' | 'up' | 'down';
  session?: number;
  streams: number;
  since?: string;
  lastError?: string;
}

/** The relay's /healthz: HTTP status and the tunnels it lists. */
export async function relayHealth(
  adminPort: number,
): Promise<{ status: number; tunnels: TunnelHealth[] }> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/healthz`);
  const body = (await res.json()) as { tunnels: TunnelHealth[] };
  return { status: res.status, tunnels: body.tunnels };
}

/** The text of a daemon's /metrics at `url`. */
export async function metricsText(url: string): Promise<string> {
  return (await fetch(url)).text();
}

/** Polls `check` every 50 ms until it returns a value other than undefined or false. */
export async function waitUntil<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: Error | undefined;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err as Error;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not after ${timeoutMs} ms${last ? ` (${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** What `workerEnvIn` sets beyond a worker's ports and key; each one left out stays as said. */
export interface WorkerEnvOptions {
  /** DATA_FOLDER and EXPERIMENTS_DIR (which must exist); left out: both in a new folder under `dir`. */
  folders?: { data: string; experiments: string };
  /** WORKER_NAME; left out: not set. */
  name?: string;
  /** REDIS_URL; left out: not set. */
  redisUrl?: string;
  /** More variables, set last (they override the ones above). */
  extra?: Record<string, string>;
}

/**
 * The environment of a worker (forward mode) with its own new tunnel and API ports, the key
 * `keyFile`, no GPUs and `LOG_LEVEL=info`, and what `opts` adds; with the two ports.
 */
export async function workerEnvIn(
  dir: string,
  keyFile: string,
  opts: WorkerEnvOptions = {},
): Promise<{ env: Record<string, string>; tunnel: number; api: number }> {
  const tunnel = await freePort();
  const api = await freePort();
  const folders = opts.folders ?? newWorkerFolders(dir);
  return {
    tunnel,
    api,
    env: {
      TUNNEL_KEY_FILE: keyFile,
      TUNNEL_LISTEN: `127.0.0.1:${tunnel}`,
      API_LISTEN: `127.0.0.1:${api}`,
      DATA_FOLDER: folders.data,
      EXPERIMENTS_DIR: folders.experiments,
      GPU_DEVICES: 'none',
      LOG_LEVEL: 'info',
      ...(opts.name === undefined ? {} : { WORKER_NAME: opts.name }),
      ...(opts.redisUrl === undefined ? {} : { REDIS_URL: opts.redisUrl }),
      ...opts.extra,
    },
  };
}

/** A new folder under `dir` for one worker: `data` (not made) and an empty `experiments`. */
function newWorkerFolders(dir: string): { data: string; experiments: string } {
  const folder = mkdtempSync(path.join(dir, 'worker-'));
  mkdirSync(path.join(folder, 'experiments'));
  return { data: path.join(folder, 'data'), experiments: path.join(folder, 'experiments') };
}

/** The environment of a relay on new ports (RELAY_LISTEN, ADMIN_LISTEN), tunnels from `extra`. */
export async function relayEnvWith(
  extra: Record<string, string>,
): Promise<{ env: Record<string, string>; relay: number; admin: number }> {
  const relay = await freePort();
  const admin = await freePort();
  return {
    relay,
    admin,
    env: {
      RELAY_LISTEN: `127.0.0.1:${relay}`,
      ADMIN_LISTEN: `127.0.0.1:${admin}`,
      LOG_LEVEL: 'info',
      ...extra,
    },
  };
}

/**
 * Writes a self-signed certificate for `localhost` and 127.0.0.1 (openssl) into `dir`;
 * returns the paths of the certificate and of its private key (mode 0600).
 */
export function selfSignedCert(dir: string): { cert: string; key: string } {
  const cert = path.join(dir, 'tls.crt');
  const key = path.join(dir, 'tls.key');
  const subject = [
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ];
  const args = 'req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2'.split(
    ' ',
  );
  execFileSync('openssl', [...args, ...subject, '-keyout', key, '-out', cert], { stdio: 'ignore' });
  chmodSync(key, 0o600);
  return { cert, key };
}
