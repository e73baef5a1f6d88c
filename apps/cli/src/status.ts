/* eslint-disable @typescript-eslint/no-explicit-any -- the daemons answer JSON read field by field */
import Table from 'cli-table3';
import pc from 'picocolors';
import { parseHostPort, readEnvironment } from '../../../libs/config/src';

/** How long one request of the CLI may take before the daemon counts as not answering. */
const TIMEOUT_MS = 5_000;

/** What `--url` and `--env-file` say; `status` and `jobs` take the same options. */
export interface ApiOptions {
  url?: string;
  envFile?: string;
}

type Colors = ReturnType<typeof pc.createColors>;

/** Colour only on a terminal, and never with NO_COLOR. */
export function colors(stream: NodeJS.WriteStream = process.stdout): Colors {
  return pc.createColors(Boolean(stream.isTTY) && !process.env.NO_COLOR);
}

function listenUrl(hostPort: string | undefined, fallback: string): string {
  const { host, port } = parseHostPort(hostPort ?? fallback);
  const h = host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
}

/**
 * The worker API's base URL: `--url`, else API_LISTEN from the environment or the env file (a
 * wildcard address is reached on loopback), else http://127.0.0.1:8000.
 */
export function apiUrl(opts: ApiOptions): string {
  if (opts.url) return opts.url.replace(/\/+$/, '');
  return listenUrl(readEnvironment(process.env, opts.envFile).API_LISTEN, '127.0.0.1:8000');
}

/** The relay's admin URL (ADMIN_LISTEN), asked only to show its tunnels when it answers. */
function relayUrl(opts: ApiOptions & { relayUrl?: string }): string {
  if (opts.relayUrl) return opts.relayUrl.replace(/\/+$/, '');
  return listenUrl(readEnvironment(process.env, opts.envFile).ADMIN_LISTEN, '127.0.0.1:9464');
}

/** The body of a 4xx/5xx as one line: the API's `{"message"}` when there is one. */
export async function errorText(res: Response): Promise<string> {
  const text = await res.text();
  try {
    const body = JSON.parse(text) as { message?: unknown };
    const m = body.message;
    if (typeof m === 'string') return `${res.status}: ${m}`;
    if (Array.isArray(m)) return `${res.status}: ${m.join('; ')}`;
  } catch {
    /* not JSON */
  }
  return `${res.status}: ${text.slice(0, 200)}`;
}

/** GET JSON; any status (/health answers 503 with a body); undefined when nothing answers. */
async function getJson(url: string): Promise<{ status: number; body: any } | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    return { status: res.status, body: await res.json() };
  } catch {
    return undefined;
  }
}

const table = (head: string[], c: Colors) =>
  new Table({ head: head.map((h) => c.bold(h)), style: { head: [], border: [] } });

const GIB = 1024 ** 3;
const gib = (b?: number) => (b === undefined ? '-' : (b / GIB).toFixed(1));
const unit = (v: number | undefined, u: string, digits = 0) =>
  v === undefined ? '-' : `${v.toFixed(digits)} ${u}`;

function stateColor(c: Colors, state: string): string {
  switch (state) {
    case 'ok':
    case 'up':
    case 'succeeded':
    case 'healthy':
      return c.green(state);
    case 'degraded':
    case 'running':
    case 'queued':
    case 'connecting':
      return c.yellow(state);
    default:
      return c.red(state);
  }
}

function tunnelsTable(c: Colors, relay: any, health: any): string | undefined {
  const t = table(['side', 'peer', 'state', 'streams', 'rtt'], c);
  for (const r of relay?.tunnels ?? [])
    t.push(['relay', r.url, stateColor(c, r.state), r.streams ?? 0, unit(r.rttMs, 'ms', 1)]);
  for (const s of health?.tunnels ?? [])
    t.push(['worker', s.peer, stateColor(c, 'up'), s.streams ?? 0, unit(s.rttMs, 'ms', 1)]);
  return t.length ? t.toString() : undefined;
}

function gpusTable(c: Colors, gpus: any): string {
  if (!gpus?.enabled) return 'GPU_DEVICES=none: no GPUs used';
  const t = table(['#', 'name', 'health', 'temp', 'util', 'memory GiB', 'power'], c);
  for (const g of gpus.devices ?? []) {
    t.push([
      g.index,
      g.name,
      g.healthy ? c.green('healthy') : c.red(`unhealthy: ${(g.reasons ?? []).join('; ')}`),
      unit(g.temperatureC, '°C'),
      unit(g.utilizationGpuPercent, '%'),
      `${gib(g.memoryUsedBytes)} / ${gib(g.memoryTotalBytes)}`,
      unit(g.powerDrawW, 'W'),
    ]);
    for (const row of migRows(c, g)) t.push(row);
  }
  const notes: string[] = [];
  if (gpus.error) notes.push(c.red(`nvidia-smi ${gpus.error.reason}: ${gpus.error.message}`));
  for (const id of gpus.missing ?? []) notes.push(c.red(`GPU ${id} is in GPU_DEVICES but gone`));
  for (const v of gpus.vanished ?? [])
    notes.push(
      c.yellow(`MIG ${v.uuid} (${v.profile} on GPU ${v.gpu}) vanished ${v.since}: re-partitioned`),
    );
  return [t.length ? t.toString() : 'no GPU seen', ...notes].join('\n');
}

/** A partitioned GPU's MIG instances, one row each under its GPU (temperature and power are the GPU's). */
function migRows(c: Colors, g: any): string[][] {
  return (g.mig ?? []).map((i: any) => [
    `${g.index}/${i.device}`,
    `└ MIG ${i.profile} ${i.uuid}`,
    i.healthy ? c.green('healthy') : c.red(`unhealthy: ${(i.reasons ?? []).join('; ')}`),
    '',
    '',
    `${gib(i.memoryUsedBytes)} / ${gib(i.memoryTotalBytes)}`,
    '',
  ]);
}

function queueTable(c: Colors, queue: any): string {
  if (!queue?.ok) return c.red(`queue not answering: ${queue?.error ?? 'unknown'}`);
  const states = ['wait', 'prioritized', 'active', 'delayed', 'completed', 'failed'];
  const t = table(['queue', ...states], c);
  for (const [name, counts] of Object.entries<Record<string, number>>(queue.counts ?? {}))
    t.push([name, ...states.map((s) => counts[s] ?? 0)]);
  return t.toString();
}

function jobsTable(c: Colors, jobs: any[] | undefined): string {
  if (!jobs) return c.red('GET /jobs did not answer');
  if (jobs.length === 0) return 'no jobs yet';
  const t = table(['id', 'experiment', 'state', 'progress', 'created', 'gpu', 'error'], c);
  for (const j of jobs) {
    t.push([
      j.id,
      j.experiment,
      stateColor(c, j.state),
      `${j.progress ?? 0} %`,
      String(j.createdAt ?? '')
        .replace('T', ' ')
        .slice(0, 19),
      j.gpu ?? '-',
      j.error ? String(j.error).slice(0, 40) : '',
    ]);
  }
  return t.toString();
}

/**
 * `gpu-sidecar status`: one screen from the worker's /health and /jobs?limit=10 and, when it
 * answers, the relay's /healthz. Exit 0 when the worker answers and is ready, 1 otherwise.
 */
export async function status(
  opts: ApiOptions & { relayUrl?: string },
  out: NodeJS.WriteStream = process.stdout,
): Promise<number> {
  const c = colors(out);
  const api = apiUrl(opts);
  const [health, jobs, relay] = await Promise.all([
    getJson(`${api}/health`),
    getJson(`${api}/jobs?limit=10`),
    getJson(`${relayUrl(opts)}/healthz`),
  ]);
  const write = (s = '') => out.write(`${s}\n`);
  if (!health && !relay) {
    process.stderr.write(
      `gpu-sidecar status: nothing answers at ${api} (the worker API): is the worker running? ` +
        `Give its address with --url http://HOST:PORT or API_LISTEN (in the environment or --env-file).\n`,
    );
    return 1;
  }
  const h = health?.body;
  if (h) {
    write(
      `${c.bold(`worker ${h.worker ?? ''}`)} at ${api}: ${stateColor(c, h.status)}` +
        ` (${h.ready ? 'ready' : c.red('not ready')})`,
    );
    for (const p of h.problems ?? []) write(`  ${c.yellow('!')} ${p}`);
  } else write(c.red(`worker: nothing answers at ${api}`));
  if (relay) write(`${c.bold('relay')}: ${stateColor(c, relay.status === 200 ? 'up' : 'down')}`);
  write();
  const tunnels = tunnelsTable(c, relay?.body, h);
  write(c.bold('Tunnels'));
  write(tunnels ?? 'no tunnel up');
  if (h) {
    write();
    write(c.bold('GPUs'));
    write(gpusTable(c, h.gpus));
    write();
    write(c.bold('Queue'));
    write(queueTable(c, h.queue));
    write();
    write(c.bold('Recent jobs'));
    write(jobsTable(c, jobs?.status === 200 ? jobs.body : undefined));
  }
  return h?.ready ? 0 : 1;
}
