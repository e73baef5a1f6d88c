import IORedis, { type RedisOptions } from 'ioredis';

type Redis = IORedis;

/**
 * The worker's start-up check of its Redis: reachable, logged in, on the database REDIS_URL
 * names, and not evicting keys. Each failure stops the worker with where Redis is (password
 * hidden) and what went wrong. ioredis itself says only "Connection is closed." when it gives up
 * (the cause is in an 'error' event), and when SELECT fails it stays on database 0 without a
 * word, so a worker told `/99` would share database 0 with another worker's queue.
 */

/** What to do about a connection error, by its text; '' when there is nothing to add. */
function hint(cause: string, sentinel = false): string {
  if (sentinel && /NOAUTH|WRONGPASS/.test(cause))
    return 'the sentinels need their own password: ?sentinelPassword=... in REDIS_URL';
  if (/ECONNREFUSED/.test(cause)) return 'is redis-server running there, on that port?';
  if (/ENOTFOUND|EAI_AGAIN/.test(cause)) return 'the host name does not resolve';
  if (/ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/.test(cause))
    return 'nothing answers there: a firewall, or the wrong host?';
  if (/NOAUTH/.test(cause))
    return 'the server needs a password: REDIS_URL=redis://[user]:PASSWORD@host:port';
  if (/WRONGPASS|invalid password|invalid username/i.test(cause))
    return 'the user or password in REDIS_URL is wrong';
  if (/Protocol error/.test(cause)) return 'what answers there is not Redis';
  return '';
}

/** The error that stops the worker: where, why, and what to do. */
export function redisStartError(where: string, cause: string): Error {
  const h = hint(cause);
  return new Error(`cannot use Redis at ${where}: ${cause}${h ? ` (${h})` : ''}`);
}

/** Connects once, no retries; rejects with the connection's own error, not "Connection is closed.". */
async function connectOnce(options: RedisOptions): Promise<Redis> {
  let last: string | undefined;
  const r = new IORedis({
    ...options,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    sentinelRetryStrategy: () => null,
  });
  r.on('error', (err: Error) => (last = err.message));
  try {
    await r.connect();
    return r;
  } catch (err) {
    r.disconnect();
    throw new Error(last ?? (err as Error).message);
  }
}

/**
 * Why a master could not be reached through Sentinel, asking each sentinel directly: ioredis
 * reports only "All sentinels are unreachable ... Last error: Connection is closed.".
 */
async function sentinelCauses(options: RedisOptions): Promise<{ lines: string[]; named: boolean }> {
  const lines: string[] = [];
  let named = false;
  for (const s of options.sentinels ?? []) {
    const at = `sentinel ${s.host}:${s.port}`;
    try {
      const r = await connectOnce({
        host: s.host,
        port: s.port,
        password: options.sentinelPassword,
        ...(options.enableTLSForSentinelMode ? { tls: {} } : {}),
      });
      try {
        const addr = (await r.call('SENTINEL', 'get-master-addr-by-name', options.name!)) as
          string[] | null;
        named ||= Boolean(addr);
        lines.push(
          addr
            ? `${at} names master '${options.name}' at ${addr.join(':')}`
            : `${at} knows no master '${options.name}' (check the name after the hosts in REDIS_URL)`,
        );
      } finally {
        r.disconnect();
      }
    } catch (err) {
      const cause = (err as Error).message;
      const h = hint(cause, true);
      lines.push(`${at}: ${cause}${h ? ` (${h})` : ''}`);
    }
  }
  return { lines, named };
}

/** Throws the start-up error when Redis may evict keys (INFO, as managed Redis often disables CONFIG). */
async function assertNoEviction(r: Redis, where: string): Promise<void> {
  const info = await r.info('memory');
  const policy = /maxmemory_policy:(\S+)/.exec(info)?.[1];
  if (policy && policy !== 'noeviction') {
    throw new Error(
      `Redis at ${where} has maxmemory-policy '${policy}': BullMQ needs 'noeviction' or queued jobs can vanish. ` +
        `Set it with: redis-cli CONFIG SET maxmemory-policy noeviction (and in redis.conf).`,
    );
  }
}

/**
 * Checks, once at start, the Redis the worker will use: it answers, accepts REDIS_URL's user and
 * password, has the database REDIS_URL names, and keeps keys (`noeviction`: BullMQ keeps jobs in
 * keys, and an evicting Redis silently loses queued work). Throws one line naming `where` (the
 * URL with its password hidden) and the cause.
 */
export async function checkRedis(options: RedisOptions, where: string): Promise<void> {
  let r: Redis;
  try {
    r = await connectOnce(options);
  } catch (err) {
    const cause = (err as Error).message;
    if (options.sentinels?.length) {
      // ioredis's own text names no sentinel and no cause; each sentinel's answer does.
      const { lines, named } = await sentinelCauses(options);
      const why = named
        ? `${cause}; ${lines.join('; ')}`
        : `no sentinel named the master: ${lines.join('; ')}`;
      throw new Error(`cannot use Redis at ${where}: ${why}`);
    }
    throw redisStartError(where, cause);
  }
  try {
    const db = options.db ?? 0;
    if (db > 0) {
      // Explicitly, since ioredis ignores a failed SELECT of its own and stays on database 0.
      await r.select(db).catch(async (err: Error) => {
        const databases = (await r.config('GET', 'databases').catch(() => undefined)) as
          string[] | undefined;
        const n = databases?.[1];
        throw new Error(
          `cannot use Redis at ${where}: database ${db}: ${err.message}` +
            (n ? ` (the server has ${n} databases, 0 to ${Number(n) - 1})` : ''),
        );
      });
    }
    await assertNoEviction(r, where);
  } finally {
    r.disconnect();
  }
}
