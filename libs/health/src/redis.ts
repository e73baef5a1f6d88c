import { withDeadline } from '../../config/src';

/**
 * Redis health for BullMQ. Takes the client as a parameter (the structural part of ioredis it
 * uses), so this file imports no Redis library.
 */
export interface RedisProbeClient {
  ping(): Promise<string>;
  info(section: string): Promise<string>;
  config(op: 'GET', name: string): Promise<unknown>;
  /** ioredis's connection state: `ready` when a command goes out at once. */
  readonly status?: string;
}

/** Where the probed Redis is and what its connection last said, for the problem line. */
export interface RedisProbeOptions {
  /** The whole probe's time budget (PING, then INFO and CONFIG in what is left). */
  timeoutMs?: number;
  /** Where REDIS_URL points, password hidden (or the embedded server's socket). */
  url?: string;
  /** The connection's last error (`connect ECONNREFUSED ...`, `WRONGPASS ...`), if any. */
  lastError?: () => string | undefined;
}

export interface RedisStatus {
  up: boolean;
  healthy: boolean;
  latencyMs?: number;
  usedMemoryBytes?: number;
  maxmemoryPolicy?: string;
  aofEnabled?: boolean;
  /** Where it is, password hidden (when the caller said). */
  url?: string;
  /** Why it is down: the connection's error or the probe's timeout. */
  error?: string;
  /** Why it is unhealthy (empty when healthy). */
  problems: string[];
}

/** Pure: `INFO` text to a map. */
export function parseRedisInfo(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

/**
 * ioredis states of a connection that was lost (or closed) and is not back: a command would wait
 * in the offline queue for a reconnect. `wait` and `connecting` (a first connection under way)
 * are not among them: there the PING goes out once connected, within the probe's budget.
 */
const LOST = new Set(['reconnecting', 'close', 'end']);

/**
 * PING (latency), INFO memory (used_memory), INFO persistence (aof_enabled) and CONFIG GET
 * maxmemory-policy. Unhealthy unless the policy is `noeviction` (BullMQ loses jobs otherwise)
 * and AOF is on (queued jobs survive a restart). Never throws: a failure is `up: false`, with
 * the cause. Answers within `timeoutMs` (2 s) whatever Redis does: a client whose connection is
 * lost (LOST) is reported down at once with its last error, since a command would only wait in
 * its offline queue for reconnects; one that hangs is cut off.
 */
export async function probeRedis(
  client: RedisProbeClient,
  opts: RedisProbeOptions | number = {},
): Promise<RedisStatus> {
  const {
    timeoutMs = 2000,
    url,
    lastError,
  } = typeof opts === 'number' ? { timeoutMs: opts } : opts;
  const at = url ? { url } : {};
  const down = (error: string): RedisStatus => ({
    up: false,
    healthy: false,
    ...at,
    error,
    problems: [`Redis${url ? ` at ${url}` : ''} is down: ${error}`],
  });
  const started = performance.now();
  if (client.status !== undefined && LOST.has(client.status)) {
    return down(lastError?.() ?? `not connected (${client.status})`);
  }
  try {
    await withDeadline(client.ping(), timeoutMs, 'PING');
  } catch (err) {
    const last = lastError?.();
    const msg = (err as Error).message;
    return down(last && last !== msg ? `${msg} (last connection error: ${last})` : msg);
  }
  const latencyMs = performance.now() - started;
  const problems: string[] = [];
  const status: RedisStatus = { up: true, healthy: false, latencyMs, ...at, problems };
  try {
    const [memory, persistence, policy] = await withDeadline(
      Promise.all([
        client.info('memory'),
        client.info('persistence'),
        client.config('GET', 'maxmemory-policy'),
      ]),
      Math.max(1, Math.round(timeoutMs - latencyMs)),
      'INFO/CONFIG',
    );
    const used = parseRedisInfo(memory).get('used_memory');
    if (used !== undefined) status.usedMemoryBytes = Number(used);
    status.aofEnabled = parseRedisInfo(persistence).get('aof_enabled') === '1';
    if (Array.isArray(policy) && typeof policy[1] === 'string') status.maxmemoryPolicy = policy[1];
  } catch (err) {
    problems.push(`could not read Redis settings: ${(err as Error).message}`);
  }
  if (status.maxmemoryPolicy !== undefined && status.maxmemoryPolicy !== 'noeviction') {
    problems.push(
      `maxmemory-policy is ${status.maxmemoryPolicy}: BullMQ needs noeviction (CONFIG SET maxmemory-policy noeviction)`,
    );
  }
  if (status.aofEnabled === false) {
    problems.push('AOF is off: queued jobs are lost on restart (CONFIG SET appendonly yes)');
  }
  status.healthy = problems.length === 0;
  return status;
}
