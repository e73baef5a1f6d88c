/**
 * Redis health for BullMQ. Takes the client as a parameter (the structural part of ioredis it
 * uses), so this file imports no Redis library.
 */
export interface RedisProbeClient {
  ping(): Promise<string>;
  info(section: string): Promise<string>;
  config(op: 'GET', name: string): Promise<unknown>;
}

export interface RedisStatus {
  up: boolean;
  healthy: boolean;
  latencyMs?: number;
  usedMemoryBytes?: number;
  maxmemoryPolicy?: string;
  aofEnabled?: boolean;
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

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what} got no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/**
 * PING (latency), INFO memory (used_memory), INFO persistence (aof_enabled) and CONFIG GET
 * maxmemory-policy. Unhealthy unless the policy is `noeviction` (BullMQ loses jobs otherwise)
 * and AOF is on (queued jobs survive a restart). Never throws: a failure is `up: false`.
 */
export async function probeRedis(client: RedisProbeClient, timeoutMs = 2000): Promise<RedisStatus> {
  const started = performance.now();
  try {
    await withTimeout(client.ping(), timeoutMs, 'PING');
  } catch (err) {
    return { up: false, healthy: false, problems: [`Redis is down: ${(err as Error).message}`] };
  }
  const latencyMs = performance.now() - started;
  const problems: string[] = [];
  const status: RedisStatus = { up: true, healthy: false, latencyMs, problems };
  try {
    const [memory, persistence, policy] = await withTimeout(
      Promise.all([
        client.info('memory'),
        client.info('persistence'),
        client.config('GET', 'maxmemory-policy'),
      ]),
      timeoutMs,
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
