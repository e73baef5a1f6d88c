// docker/: the Dockerfile, compose.yaml and the monitoring config say what docs/DEPLOY.md
// promises. These are static checks, including of the `npm ci` path that needs the network;
// deploy-docker-build.int-spec.ts builds the image for real, offline.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Script } from 'node:vm';
import { parse } from 'yaml';

const dockerDir = path.join(__dirname, '..', '..', 'docker');
const read = (f: string) => readFileSync(path.join(dockerDir, f), 'utf8');

describe('docker/Dockerfile', () => {
  const text = read('Dockerfile');
  /** Instructions, continuation lines joined, comments dropped. */
  const instructions = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const stages = instructions.filter((l) => l.startsWith('FROM '));

  it('is multi-stage from node:20-bookworm-slim (overridable)', () => {
    expect(instructions).toContain('ARG NODE_IMAGE=node:20-bookworm-slim');
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(stages.every((s) => s.startsWith('FROM ${NODE_IMAGE}'))).toBe(true);
  });

  it('builds with npm ci && npm run build; the runtime gets production dependencies only', () => {
    expect(text).toMatch(/RUN \[ "\$APP_FROM" = prebuilt \] \|\| npm ci\b/);
    expect(instructions.join('\n')).toMatch(/else +npm run build && npm prune --omit=dev/);
    expect(instructions).toContain('ARG APP_FROM=source');
    const runtime = instructions.slice(instructions.lastIndexOf(stages[stages.length - 1]));
    expect(runtime.filter((l) => l.startsWith('COPY --from=')).join('\n')).toMatch(
      /node_modules[\s\S]*dist/,
    );
    expect(runtime.some((l) => /npm (ci|install)(?!.*--omit=dev)/.test(l))).toBe(false);
  });

  it('runs as a non-root user under tini, with redis-server for the embedded mode', () => {
    const users = instructions.filter((l) => l.startsWith('USER '));
    expect(users.length).toBeGreaterThan(0);
    expect(users[users.length - 1]).not.toMatch(/USER (root|0)\b/);
    expect(instructions.find((l) => l.startsWith('ENTRYPOINT'))).toContain('tini');
    expect(text).toMatch(/apt-get install[^\n]*tini[^\n]*redis-server/);
  });

  it('has a HEALTHCHECK on /health/live falling back to /test, with node fetch', () => {
    const hc = instructions.find((l) => l.startsWith('HEALTHCHECK'))!;
    expect(hc).toBeDefined();
    expect(hc).toContain('http://127.0.0.1:8000/health/live');
    expect(hc).toContain('http://127.0.0.1:8000/test');
    expect(hc).toContain('fetch(');
    expect(hc).not.toContain('curl');
  });

  it('the health one-liner is valid JavaScript', () => {
    const hc = instructions.find((l) => l.startsWith('HEALTHCHECK'))!;
    const argv = JSON.parse(hc.slice(hc.indexOf('CMD') + 3).trim()) as string[];
    expect(argv.slice(0, 2)).toEqual(['node', '-e']);
    expect(() => new Script(argv[2])).not.toThrow(); // compiles, never runs
  });

  it('Dockerfile.dockerignore keeps keys, env files and build outputs out of the context', () => {
    const ignore = read('Dockerfile.dockerignore').split('\n');
    for (const p of ['**/node_modules', 'dist', '.env', '**/*.key', '.git', 'data'])
      expect(ignore).toContain(p);
  });
});

describe('docker/compose.yaml', () => {
  const compose = parse(read('compose.yaml'));
  const svc = compose.services;

  it('redis: AOF on a named volume and noeviction', () => {
    const cmd = (svc.redis.command as string[]).join(' ');
    expect(cmd).toContain('--appendonly yes');
    expect(cmd).toContain('--maxmemory-policy noeviction');
    expect(svc.redis.volumes).toContain('redis-data:/data');
    expect(Object.keys(compose.volumes)).toContain('redis-data');
  });

  it('worker: NVIDIA GPU reservation, the Docker socket, DATA_FOLDER at the same path, Redis, the tunnel port', () => {
    const w = svc.worker;
    expect(w.deploy.resources.reservations.devices[0]).toMatchObject({
      driver: 'nvidia',
      capabilities: ['gpu'],
    });
    expect(w.volumes).toContain('/var/run/docker.sock:/var/run/docker.sock');
    expect(w.volumes).toContain('${DATA_FOLDER}:${DATA_FOLDER}');
    expect(w.environment.REDIS_URL).toBe('redis://redis:6379');
    expect(w.environment.TUNNEL_LISTEN).toBe('0.0.0.0:8080');
    expect(w.ports).toContain('${TUNNEL_PORT:-8080}:8080');
    expect(w.ports).toContain('127.0.0.1:${API_PORT:-8000}:8000');
    expect(w.depends_on.redis.condition).toBe('service_healthy');
  });

  it('relay: host network (its loopback port is the host loopback)', () => {
    expect(svc.relay.network_mode).toBe('host');
    expect(svc.relay.command).toEqual(['relay']);
  });

  it('monitoring profile: Prometheus and Grafana', () => {
    expect(svc.prometheus.profiles).toEqual(['monitoring']);
    expect(svc.grafana.profiles).toEqual(['monitoring']);
    expect(svc.prometheus.volumes).toContain(
      './monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro',
    );
  });

  it('prometheus.yml scrapes the relay ADMIN_LISTEN and the worker API /metrics', () => {
    const prom = parse(read('monitoring/prometheus.yml'));
    const targets = Object.fromEntries(
      (
        prom.scrape_configs as {
          job_name: string;
          metrics_path: string;
          static_configs: { targets: string[] }[];
        }[]
      ).map((j) => [
        j.job_name,
        { path: j.metrics_path, targets: j.static_configs.flatMap((c) => c.targets) },
      ]),
    );
    expect(targets['gpu-sidecar-relay']).toEqual({ path: '/metrics', targets: ['127.0.0.1:9464'] });
    expect(targets['gpu-sidecar-worker']).toEqual({
      path: '/metrics',
      targets: ['127.0.0.1:8000'],
    });
  });
});
