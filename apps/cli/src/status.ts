/* eslint-disable @typescript-eslint/no-explicit-any -- the daemons answer JSON read field by field */
import Table from 'cli-table3';
import { readEnvironment } from '../../../libs/config/src';
import {
  apiTarget,
  call,
  colors,
  isRelayConfig,
  NoAnswerError,
  relayAdminUrl,
  type ApiOptions,
  type TimeoutOptions,
} from './http';

type Colors = ReturnType<typeof colors>;

/** A daemon's JSON answer (any status: /health answers 503 with a body), or why there was none. */
type Answer = { status: number; body: any } | { error: string };

async function getJson(url: string, opts: TimeoutOptions): Promise<Answer> {
  try {
    const res = await call(url, opts);
    const text = await res.text();
    try {
      return { status: res.status, body: JSON.parse(text) };
    } catch {
      // Not a daemon's JSON: a relay with no tunnel (503), a proxy's error page, another service.
      return { error: `answered HTTP ${res.status}: ${text.trim().slice(0, 200) || '(empty)'}` };
    }
  } catch (err) {
    if (err instanceof NoAnswerError) {
      return { error: err.code === 'timeout' ? `no answer within ${opts.timeout} s` : err.code };
    }
    return { error: (err as Error).message };
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

function jobsTable(c: Colors, jobs: any[] | undefined, why?: string): string {
  if (!jobs) return c.red(`GET /jobs did not answer${why ? `: ${why}` : ''}`);
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

/** Why the relay counts as down (its tunnels' last errors), or undefined when it is up. */
function relayDown(relay: Answer): string | undefined {
  if ('error' in relay) return `nothing answers (${relay.error})`;
  if (relay.status === 200) return undefined;
  const errors = (relay.body?.tunnels ?? [])
    .filter((t: any) => t.state !== 'up')
    .map((t: any) => `${t.url} ${t.state}${t.lastError ? `: ${t.lastError}` : ''}`);
  return `no tunnel up${errors.length ? ` (${errors.join('; ')})` : ''}`;
}

/**
 * `gpu-sidecar status`: one screen from the worker's /health and /jobs?limit=10 and the relay's
 * /healthz. The worker API is found as `jobs` finds it (through RELAY_LISTEN with a relay's
 * configuration). The relay counts when it answers, when `--relay-url` names it, or when the
 * configuration is a relay's. Exit 0 when the worker answers and is ready and a relay that counts
 * has a tunnel up; 1 otherwise, with what is down named: the worker's problems (Redis with its
 * URL, password hidden, and the error), or the relay's tunnels and their last errors.
 */
export async function status(
  opts: ApiOptions & TimeoutOptions & { relayUrl?: string },
  out: NodeJS.WriteStream = process.stdout,
): Promise<number> {
  const c = colors(out);
  const target = apiTarget(opts);
  const api = target.url;
  const adminUrl = relayAdminUrl(opts);
  const [health, relay] = await Promise.all([
    getJson(`${api}/health`, opts),
    getJson(`${adminUrl}/healthz`, opts),
  ]);
  // The job list comes from Redis: with Redis down, /health already says so and /jobs would only
  // wait out the timeout.
  const redisDown = !('error' in health) && health.body?.redis?.up === false;
  const jobs: Answer | undefined =
    'error' in health || redisDown ? undefined : await getJson(`${api}/jobs?limit=10`, opts);
  const relayCounts =
    !('error' in relay) ||
    Boolean(opts.relayUrl) ||
    isRelayConfig(readEnvironment(process.env, opts.envFile));
  const write = (s = '') => out.write(`${s}\n`);
  const what =
    target.from === 'RELAY_LISTEN'
      ? 'RELAY_LISTEN: the worker API through the relay'
      : 'the worker API';
  /** What happened at the worker API's address: nothing there, or something that is not it. */
  const noWorker = (e: string) =>
    e.startsWith('answered ')
      ? `no worker API at ${api} (${what}): it ${e}`
      : `nothing answers at ${api} (${what}): ${e}`;
  if ('error' in health && 'error' in relay) {
    process.stderr.write(
      `gpu-sidecar status: ${noWorker(health.error)}: is the worker running? ` +
        `Give its address with --url http://HOST:PORT or API_LISTEN (in the environment or --env-file).` +
        (relayCounts ? ` Nor does the relay at ${adminUrl}: ${relay.error}.` : '') +
        '\n',
    );
    return 1;
  }
  const h = 'error' in health ? undefined : health.body;
  if (h) {
    write(
      `${c.bold(`worker ${h.worker ?? ''}`)} at ${api}: ${stateColor(c, h.status)}` +
        ` (${h.ready ? 'ready' : c.red('not ready')})`,
    );
    for (const p of h.problems ?? []) write(`  ${c.yellow('!')} ${p}`);
  } else {
    const e = (health as { error: string }).error;
    write(c.red(`worker: ${noWorker(e)}`));
  }
  const down = relayCounts ? relayDown(relay) : undefined;
  if (relayCounts) {
    write(`${c.bold('relay')} at ${adminUrl}: ${down ? c.red(`down: ${down}`) : c.green('up')}`);
  }
  write();
  const relayBody = 'error' in relay ? undefined : relay.body;
  const tunnels = tunnelsTable(c, relayBody, h);
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
    if (!jobs) write(c.red('not read: Redis is down'));
    else if ('error' in jobs) write(jobsTable(c, undefined, jobs.error));
    else write(jobsTable(c, jobs.status === 200 ? jobs.body : undefined, `${jobs.status}`));
  }
  return h?.ready && !down ? 0 : 1;
}
