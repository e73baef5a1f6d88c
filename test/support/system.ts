import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
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
  /** Starts the worker again with the same configuration (after a stop or kill). */
  restartWorker(): Promise<DaemonProcess>;
  stop(): Promise<void>;
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
      pair.worker = runCli(['worker'], workerEnv, dir);
      await pair.worker.waitForLog('worker ready');
      return pair.worker;
    },
    stop: async () => {
      await Promise.all([pair.relay.stop(), pair.worker.stop()]);
    },
  };
  await pair.worker.waitForLog('worker ready');
  pair.relay = runCli(['relay'], relayEnv, dir);
  await pair.relay.waitForLog('relay ready');
  await waitForTunnel(ports.admin);
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
