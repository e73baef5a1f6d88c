import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import path from 'node:path';
import type { RelayConfig, WorkerConfig } from '../../../../libs/config/src';
import { silentLogger } from '../../../../libs/config/src';
import { dockerClient } from '../../../../libs/docker/src';
import { probeDisk, probeRedis } from '../../../../libs/health/src';
import {
  connectRedis,
  loadExperiments,
  redisOptionsFromUrl,
  type Experiment,
} from '../../../../libs/jobs/src';
import {
  loadKeyFile,
  loadKeyRing,
  noopTunnelMetrics,
  TunnelDialer,
} from '../../../../libs/tunnel/src';
import { currentAccount, mayAccess, type Account } from './accounts';
import { gpuContainerCheck } from './gpu-container';
import type { CheckResult } from './result';
import type { ServiceView } from './source';
import { localUrl } from '../http';

type Check = () => Promise<CheckResult | CheckResult[]>;
const ok = (name: string, detail: string): CheckResult => ({ name, ok: true, detail });
const bad = (name: string, detail: string, fix: string): CheckResult => ({
  name,
  ok: false,
  detail,
  fix,
});
const warning = (name: string, detail: string, fix: string): CheckResult => ({
  name,
  ok: true,
  warn: true,
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
          // The fix is said once, after the dash: the loader's own "run `chmod ...`" is cut.
          const msg = (err as Error).message.replace(/: run `[^`]*`$/, '');
          const fix = /readable by group or others/.test(msg)
            ? `chmod 600 ${file}`
            : /EACCES/.test(msg)
              ? `run doctor as the daemon's user, or as root (sudo gpu-sidecar doctor)`
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
    const healthz = `${localUrl(host, port)}/healthz`;
    try {
      const res = await fetch(healthz, {
        signal: AbortSignal.timeout(3000),
      });
      const body = (await res.json()) as { tunnels: { url: string; state: string }[] };
      const up = body.tunnels.filter((t) => t.state === 'up').length;
      return res.ok
        ? ok('relay', `running; ${up} of ${body.tunnels.length} tunnels up`)
        : bad(
            'relay',
            `running, but no tunnel is up`,
            'fix the tunnel checks above, then watch `curl ' + `${healthz}\``,
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

/**
 * Worker host: Docker, NVIDIA runtime, Redis, DATA_FOLDER, experiments. `service`: the systemd
 * unit the daemon runs under, whose user (not doctor's) must be able to write DATA_FOLDER and
 * use the Docker socket.
 */
export function workerChecks(config: WorkerConfig, service?: ServiceView): Check[] {
  const experiments = experimentsOf(config);
  const inDocker = experiments.filter((e) => e.runner === 'docker').map((e) => e.name);
  return [
    async () => {
      try {
        const docker = dockerClient(config.dockerHost);
        const info = (await docker.info()) as {
          ServerVersion: string;
          Runtimes?: Record<string, unknown>;
        };
        const res = [ok('docker', `${config.dockerHost}: Docker ${info.ServerVersion}`)];
        const access = socketAccess(config.dockerHost, service, inDocker.length > 0);
        if (access) res.push(access);
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
          res.push(await gpuContainerCheck(docker, config.gpuDevices, nvidia, experiments));
        }
        return res;
      } catch (err) {
        const detail = `${config.dockerHost}: ${(err as Error).message}`;
        const fix =
          "start Docker (systemctl start docker), check DOCKER_HOST, and add the daemon's user to the docker group";
        // Only the docker experiments need it: the worker runs every other job without it.
        return inDocker.length
          ? bad('docker', `${detail} (needed by ${inDocker.join(', ')})`, fix)
          : warning(
              'docker',
              `${detail}; no installed experiment runs in Docker, so nothing needs it now`,
              `${fix}, before installing a docker experiment`,
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
      const client = connectRedis(redisOptionsFromUrl(config.redisUrl), {
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
    async () => dataFolderCheck(config, service),
    async () => {
      try {
        const names = loadExperiments(config.experimentsDir)
          .list()
          .map((e: { name: string }) => e.name);
        return names.length
          ? ok('experiments', `${config.experimentsDir}: ${names.join(', ')}`)
          : warning(
              'experiments',
              `${config.experimentsDir}: no experiment installed, so no job can be submitted`,
              `put one YAML file per experiment there (examples/experiments has two)`,
            );
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

/** The nearest folder that exists: `p` itself, or the first of its parents. */
function nearestExisting(p: string): string {
  let dir = path.resolve(p);
  while (!existsSync(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
}

const under = (p: string, dir: string) =>
  path.resolve(p) === path.resolve(dir) || path.resolve(p).startsWith(`${path.resolve(dir)}/`);

/**
 * DATA_FOLDER: writable by whoever runs the daemon (the unit's user, else this process), free
 * space, and under systemd's ProtectSystem=strict inside a path the unit may write. Creates
 * nothing: a folder that does not exist yet is fine when the daemon can create it at start.
 */
async function dataFolderCheck(config: WorkerConfig, service?: ServiceView): Promise<CheckResult> {
  const dir = path.resolve(config.dataFolder);
  const unit = service?.unit;
  if (unit?.protectSystemStrict) {
    const writable = [...unit.readWritePaths, ...unit.stateDirectories];
    if (!writable.some((w) => under(dir, w)))
      return bad(
        'data folder',
        `${dir} is read-only to ${unit.name} (ProtectSystem=strict; it may write ${writable.join(', ') || 'nothing'})`,
        `systemctl edit ${unit.name} and add [Service] ReadWritePaths=${dir}`,
      );
  }
  if (service?.missingUser)
    return bad(
      'data folder',
      `${unit?.name} runs as ${service.missingUser}, which does not exist`,
      `sudo gpu-sidecar install worker (it creates the user)`,
    );
  const who: Account | undefined = service ? service.account : currentAccount();
  const whoName = service ? `${unit?.name}'s user ${who?.name ?? '(dynamic)'}` : 'this user';
  const existing = nearestExisting(dir);
  const state = unit?.stateDirectories.find((s) => under(dir, s));
  if (who && !(existing !== dir && state && !existsSync(state))) {
    let can = false;
    try {
      can = statSync(existing).isDirectory() && mayAccess(who, existing, 3);
    } catch {
      can = false;
    }
    if (!can)
      return bad(
        'data folder',
        existing === dir
          ? `${dir} is not writable by ${whoName}`
          : `${dir} does not exist and ${whoName} cannot create it in ${existing}`,
        `mkdir -p ${dir} && chown ${service ? who.name : '<the daemon user>'} ${dir}`,
      );
  }
  if (existing !== dir) {
    const by = state && !existsSync(state) ? 'systemd (StateDirectory=)' : 'the worker';
    return ok('data folder', `${dir}: does not exist yet; ${by} creates it at start`);
  }
  const d = await probeDisk(dir, config.minFreeDisk);
  const free = `${(d.freeBytes / 1e9).toFixed(1)} GB free (${d.freePercent.toFixed(1)} %)`;
  return d.belowThreshold
    ? bad(
        'data folder',
        `${dir}: ${free}, under MIN_FREE_DISK: new jobs get 507`,
        'free space or lower RESULTS_TTL',
      )
    : ok('data folder', `${dir}: writable, ${free}`);
}

/**
 * Under systemd, whether the unit's user may use the Docker socket (root, doctor's usual user,
 * always may). Undefined when there is nothing to say (not a unit, not a unix socket).
 */
function socketAccess(
  dockerHost: string,
  service: ServiceView | undefined,
  needed: boolean,
): CheckResult | undefined {
  if (!service?.account || !dockerHost.startsWith('unix://')) return undefined;
  const socket = dockerHost.slice('unix://'.length);
  let can = false;
  try {
    can = mayAccess(service.account, socket, 6);
  } catch {
    return undefined;
  }
  if (can) return ok('docker access', `${service.account.name} may use ${socket}`);
  const gid = statSync(socket).gid;
  const detail = `${service.unit.name}'s user ${service.account.name} cannot use ${socket} (group ${gid})`;
  const fix = `systemctl edit ${service.unit.name}: SupplementaryGroups= the socket's group`;
  return needed ? bad('docker access', detail, fix) : warning('docker access', detail, fix);
}

/** Runs checks one after another (their output reads top-down like a checklist). */
export async function runChecks(checks: Check[]): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const c of checks) out.push(...[await c()].flat());
  return out;
}
