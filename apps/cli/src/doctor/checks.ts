import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import type { RelayConfig, WorkerConfig } from '../../../../libs/config/src';
import { silentLogger } from '../../../../libs/config/src';
import { dockerClient, probeDisk, probeRedis } from '../../../../libs/health/src';
import { loadExperiments, type Experiment } from '../../../../libs/jobs/src';
import {
  connect as redisConnect,
  optionsFromUrl,
} from '../../../../libs/jobs/src/queue/redis-connection';
import {
  loadKeyFile,
  loadKeyRing,
  noopTunnelMetrics,
  TunnelDialer,
} from '../../../../libs/tunnel/src';
import { gpuContainerCheck } from './gpu-container';

/** One line of `gpu-sidecar doctor`: what was checked, and when it failed, the fix. */
export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
}

type Check = () => Promise<CheckResult | CheckResult[]>;
const ok = (name: string, detail: string): CheckResult => ({ name, ok: true, detail });
const bad = (name: string, detail: string, fix: string): CheckResult => ({
  name,
  ok: false,
  detail,
  fix,
});

/** Each key file: present, 32+ bytes, mode 0600; prints the fingerprint to compare with the peer's. */
export function keyChecks(files: readonly string[]): Check {
  return async () =>
    Promise.all(
      files.map(async (file) => {
        try {
          const k = await loadKeyFile(file);
          return ok(
            'key file',
            `${file}: fingerprint ${k.fingerprint} (the peer must list the same)`,
          );
        } catch (err) {
          const msg = (err as Error).message;
          const fix = /chmod/.test(msg)
            ? `chmod 600 ${file}`
            : `gpu-sidecar keygen ${file}, then copy it to the peer`;
          return bad('key file', msg, fix);
        }
      }),
    );
}

function tcpReachable(host: string, port: number, timeoutMs = 3000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host, port });
    const timer = setTimeout(
      () => (s.destroy(), resolve('timed out (packets dropped?)')),
      timeoutMs,
    );
    s.once('connect', () => (clearTimeout(timer), s.destroy(), resolve(undefined)));
    s.once(
      'error',
      (e: NodeJS.ErrnoException) => (clearTimeout(timer), resolve(e.code ?? e.message)),
    );
  });
}

/** Dials each tunnel URL: TCP reachable (else the firewall hint), then a real handshake with our key. */
export function tunnelChecks(config: RelayConfig | WorkerConfig): Check {
  return async () => {
    const out: CheckResult[] = [];
    const keys = await loadKeyRing(config.keyFiles).catch(() => undefined);
    for (const url of config.tunnelConnect) {
      const u = new URL(url);
      const port = Number(u.port || (u.protocol === 'wss:' ? 443 : 80));
      const err = config.httpsProxy ? undefined : await tcpReachable(u.hostname, port);
      if (err) {
        out.push(
          bad(
            'tunnel port',
            `${u.host}: ${err}`,
            `open TCP ${port} on the peer's host firewall (ufw/iptables/firewalld) ` +
              `and in the cloud provider's security list / security group, and check the peer daemon runs`,
          ),
        );
        continue;
      }
      if (!keys) continue; // the key check already says what is wrong
      out.push(await handshake(url, keys, config.httpsProxy));
    }
    return out;
  };
}

async function handshake(
  url: string,
  keys: Awaited<ReturnType<typeof loadKeyRing>>,
  proxy?: string,
): Promise<CheckResult> {
  const log = silentLogger();
  let failure: string | undefined;
  const dialer = new TunnelDialer({
    url,
    keys,
    proxy,
    logger: log,
    backoff: { initialMs: 60_000 },
    metrics: {
      ...noopTunnelMetrics,
      handshake: (r, reason) => {
        if (r === 'failed') failure = reason;
      },
    },
    onSession: () => undefined,
  });
  dialer.start();
  const deadline = Date.now() + 7000;
  while (!dialer.current && !failure && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  const up = Boolean(dialer.current);
  await dialer.stop();
  if (up) return ok('tunnel', `${url}: authenticated with key ${keys.primary.fingerprint}`);
  const reason = failure ?? 'no answer';
  const fix = /closed|bad key/.test(reason)
    ? 'the peer refused our key: compare the fingerprints `gpu-sidecar doctor` prints on both hosts'
    : "see the peer daemon's log for the handshake failure reason";
  return bad('tunnel', `${url}: handshake failed (${reason})`, fix);
}

const noop = () => undefined;

/** The installed experiments, or none when the files are wrong (the experiments check says so). */
function experimentsOf(config: WorkerConfig): Experiment[] {
  try {
    return loadExperiments(config.experimentsDir).list();
  } catch {
    return [];
  }
}

/** The relay's own view: is it running here, and does it see a worker? */
export function relaySeesWorker(config: RelayConfig): Check {
  return async () => {
    const { host, port } = config.adminListen;
    try {
      const res = await fetch(`http://${host}:${port}/healthz`, {
        signal: AbortSignal.timeout(3000),
      });
      const body = (await res.json()) as { tunnels: { url: string; state: string }[] };
      const up = body.tunnels.filter((t) => t.state === 'up').length;
      return res.ok
        ? ok('relay', `running; ${up} of ${body.tunnels.length} tunnels up`)
        : bad(
            'relay',
            `running, but no tunnel is up`,
            'fix the tunnel checks above, then watch `curl ' + `http://${host}:${port}/healthz\``,
          );
    } catch {
      return bad(
        'relay',
        `nothing answers on ADMIN_LISTEN ${host}:${port}`,
        'start it: systemctl start gpu-sidecar-relay (or docker.sh up relay)',
      );
    }
  };
}

/** Worker host: Docker, NVIDIA runtime, Redis, DATA_FOLDER, experiments. */
export function workerChecks(config: WorkerConfig): Check[] {
  return [
    async () => {
      try {
        const docker = dockerClient(config.dockerHost);
        const info = (await docker.info()) as {
          ServerVersion: string;
          Runtimes?: Record<string, unknown>;
        };
        const res = [ok('docker', `${config.dockerHost}: Docker ${info.ServerVersion}`)];
        if (config.gpuDevices.kind !== 'none') {
          const nvidia = Boolean(info.Runtimes && 'nvidia' in info.Runtimes);
          res.push(
            nvidia
              ? ok('nvidia runtime', 'registered with Docker')
              : bad(
                  'nvidia runtime',
                  'Docker has no nvidia runtime: GPU jobs cannot start',
                  'apt-get install nvidia-container-toolkit && nvidia-ctk runtime configure --runtime=docker && systemctl restart docker',
                ),
          );
          res.push(
            await gpuContainerCheck(docker, config.gpuDevices, nvidia, experimentsOf(config)),
          );
        }
        return res;
      } catch (err) {
        return bad(
          'docker',
          `${config.dockerHost}: ${(err as Error).message}`,
          "start Docker (systemctl start docker), check DOCKER_HOST, and add the daemon's user to the docker group",
        );
      }
    },
    async () => {
      if (!config.redisUrl) {
        return spawnSync('redis-server', ['--version']).status === 0
          ? ok('redis', 'embedded redis-server under DATA_FOLDER/redis (AOF, noeviction)')
          : bad(
              'redis',
              'REDIS_URL is unset and redis-server is not installed',
              'apt-get install redis-server, or set REDIS_URL',
            );
      }
      const client = redisConnect(optionsFromUrl(config.redisUrl), {
        maxRetriesPerRequest: 1,
        retryStrategy: () => null,
      });
      client.on('error', noop);
      try {
        const s = await probeRedis(client);
        if (!s.up) return bad('redis', 'not reachable', 'start Redis, or check REDIS_URL');
        return s.healthy
          ? ok('redis', `up, ${s.latencyMs?.toFixed(1)} ms, policy ${s.maxmemoryPolicy}, AOF on`)
          : bad(
              'redis',
              s.problems.join('; '),
              'redis-cli CONFIG SET maxmemory-policy noeviction; CONFIG SET appendonly yes (and in redis.conf)',
            );
      } finally {
        client.disconnect();
      }
    },
    async () => {
      try {
        mkdirSync(config.dataFolder, { recursive: true });
        accessSync(config.dataFolder, constants.W_OK);
      } catch (err) {
        return bad(
          'data folder',
          `${config.dataFolder}: ${(err as Error).message}`,
          `mkdir -p ${config.dataFolder} && chown <daemon user> ${config.dataFolder}`,
        );
      }
      const d = await probeDisk(config.dataFolder, config.minFreeDisk);
      const free = `${(d.freeBytes / 1e9).toFixed(1)} GB free (${d.freePercent.toFixed(1)} %)`;
      return d.belowThreshold
        ? bad(
            'data folder',
            `${config.dataFolder}: ${free}, under MIN_FREE_DISK: new jobs get 507`,
            'free space or lower RESULTS_TTL',
          )
        : ok('data folder', `${config.dataFolder}: writable, ${free}`);
    },
    async () => {
      try {
        const names = loadExperiments(config.experimentsDir)
          .list()
          .map((e: { name: string }) => e.name);
        return ok('experiments', `${config.experimentsDir}: ${names.join(', ') || 'none'}`);
      } catch (err) {
        return bad(
          'experiments',
          (err as Error).message,
          'fix the named file and field, or set EXPERIMENTS_DIR',
        );
      }
    },
  ];
}

/** Runs checks one after another (their output reads top-down like a checklist). */
export async function runChecks(checks: Check[]): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const c of checks) out.push(...[await c()].flat());
  return out;
}
