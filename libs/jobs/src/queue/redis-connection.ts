import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import IORedis, { type RedisOptions } from 'ioredis';
import { parseRedisUrl, redactUrl, type Logger } from '../../../config/src';
import { checkRedis } from './redis-check';

/**
 * With redis-check.ts (the start-up check), the one file that imports ioredis (besides BullMQ's
 * own use of it). Where the worker's Redis is: REDIS_URL, or an embedded redis-server that the
 * worker starts, watches and stops.
 */
export interface RedisBackend {
  /** ioredis options for new connections (BullMQ makes its own from these). */
  options: RedisOptions;
  describe: string;
  stop(): Promise<void>;
}

export type Redis = IORedis;

/**
 * ioredis options from REDIS_URL: one server, or a master through Redis Sentinel (ioredis asks
 * the sentinels for the master and follows a failover; BullMQ uses the same options).
 */
export function optionsFromUrl(url: string): RedisOptions {
  const t = parseRedisUrl(url);
  const common: RedisOptions = {
    username: t.username,
    password: t.password,
    db: t.db,
    ...(t.tls ? { tls: {} } : {}),
  };
  if (t.kind === 'direct') return { ...common, host: t.host, port: t.port };
  return {
    ...common,
    sentinels: t.sentinels,
    name: t.name,
    sentinelPassword: t.sentinelPassword,
    // Reconnect as soon as a sentinel announces +switch-master, instead of writing on to a demoted
    // master until its connection breaks (writes there would be lost when it resyncs).
    failoverDetector: true,
    ...(t.tls ? { enableTLSForSentinelMode: true } : {}),
  };
}

/** A plain connection for commands (not blocking; fails fast when Redis is away). */
export function connect(options: RedisOptions, extra: RedisOptions = {}): Redis {
  return new IORedis({ ...options, lazyConnect: false, ...extra });
}

async function freeLoopbackPort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  srv.close();
  await once(srv, 'close');
  return port;
}

/**
 * Connects to REDIS_URL, or starts the embedded Redis; checks it either way (reachable, logged in,
 * the right database, noeviction: redis-check.ts), so a worker that cannot use its Redis stops
 * at start with where it is (password hidden) and why.
 */
export async function openRedis(
  redisUrl: string | undefined,
  dataFolder: string,
  log: Logger,
): Promise<RedisBackend> {
  if (redisUrl) {
    const options = optionsFromUrl(redisUrl);
    const describe = redactUrl(redisUrl.trim());
    await checkRedis(options, describe);
    return { options, describe, stop: async () => undefined };
  }
  const embedded = await startEmbeddedRedis(path.resolve(dataFolder, 'redis'), log);
  try {
    await checkRedis(embedded.options, `the embedded redis-server (${embedded.describe})`);
  } catch (err) {
    await embedded.stop();
    throw err;
  }
  return embedded;
}

/**
 * Starts `redis-server` with AOF, noeviction and its data under `dir`, listening on a unix socket
 * (mode 700: only this user) when the path is short enough, else on a free loopback port.
 * Restarted if it dies; stopped (with a final AOF flush) by `stop()`.
 */
export async function startEmbeddedRedis(dir: string, log: Logger): Promise<RedisBackend> {
  const probe = spawnSync('redis-server', ['--version']);
  if (probe.error || probe.status !== 0) {
    throw new Error(
      'redis-server not found on PATH: install it (apt-get install redis-server) or set REDIS_URL',
    );
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pidFile = path.join(dir, 'redis.pid');
  await stopLeftover(pidFile, log);
  const socket = path.join(dir, 'redis.sock');
  const useSocket = Buffer.byteLength(socket) < 100;
  const port = useSocket ? 0 : await freeLoopbackPort();
  const args = [
    '--dir',
    dir,
    '--appendonly',
    'yes',
    '--appendfsync',
    'everysec',
    '--save',
    '',
    '--maxmemory-policy',
    'noeviction',
    '--bind',
    '127.0.0.1',
    '--port',
    String(port),
    '--daemonize',
    'no',
    '--logfile',
    path.join(dir, 'redis.log'),
    '--pidfile',
    pidFile,
    ...(useSocket ? ['--unixsocket', socket, '--unixsocketperm', '700'] : []),
  ];
  const options: RedisOptions = useSocket ? { path: socket } : { host: '127.0.0.1', port };
  const describe = useSocket ? socket : `127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  let stopping = false;
  /** Set when it exits before it first answered: then start-up fails instead of restarting it. */
  let startFailed: string | undefined;
  let started = false;
  const logFile = path.join(dir, 'redis.log');
  const launch = (): ChildProcess => {
    const c = spawn('redis-server', args, { stdio: 'ignore' });
    c.on('exit', (code, signal) => {
      if (stopping) return;
      if (!started) {
        startFailed = `exited (${code ?? signal}) at start: ${lastLogLines(logFile)}`;
        return;
      }
      log.error(
        { code, signal, redis: describe },
        'embedded redis-server exited; restarting in 1s',
      );
      setTimeout(() => {
        if (!stopping) child = launch();
      }, 1000).unref();
    });
    return c;
  };
  child = launch();
  // Wait until it answers.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = connect(options, {
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      lazyConnect: true,
    });
    r.on('error', () => undefined); // expected until it listens
    try {
      await r.connect();
      await r.ping();
      r.disconnect();
      break;
    } catch {
      r.disconnect();
      if (startFailed) throw new Error(`embedded redis-server (${dir}) ${startFailed}`);
      if (Date.now() > deadline) {
        stopping = true;
        child.kill('SIGKILL');
        throw new Error(
          `embedded redis-server (${dir}) did not answer within 10 s: ${lastLogLines(logFile)}`,
        );
      }
      await new Promise((res) => setTimeout(res, 50));
    }
  }
  started = true;
  log.info({ redis: describe }, 'embedded redis-server started');
  return {
    options,
    describe,
    stop: async () => {
      stopping = true;
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = once(c, 'exit');
      c.kill('SIGTERM'); // redis-server flushes the AOF on SIGTERM
      const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * The last lines redis-server logged, without their pid and time stamp, and where the log is: the
 * cause of a start that failed (a bad AOF, a port in use, a folder it cannot write).
 */
function lastLogLines(logFile: string): string {
  let text = '';
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return `no log at ${logFile}`;
  }
  const lines = text
    .split('\n')
    .map((l) => l.replace(/^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [#*.-] /, '').trim())
    .filter(Boolean)
    .slice(-3);
  return `${lines.join(' | ') || 'nothing logged'} (see ${logFile})`;
}

/**
 * A redis-server left by a previous run of this worker that was killed (SIGKILL does not reach
 * children) still holds the AOF in `dir`. Two servers on one AOF would corrupt it, so the old one
 * is stopped (SIGTERM: it flushes its AOF) before the new one starts on the same data.
 */
async function stopLeftover(pidFile: string, log: Logger): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    return;
  }
  const isRedis = () => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'latin1').startsWith('redis-server');
    } catch {
      return false;
    }
  };
  if (!pid || !isRedis()) return;
  log.warn({ pid }, 'stopping the embedded redis-server left by a previous run');
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 200 && isRedis(); i++) await new Promise((r) => setTimeout(r, 50));
  if (isRedis()) process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && isRedis(); i++) await new Promise((r) => setTimeout(r, 50));
}

/** ioredis's CONNECTION_CLOSED_ERROR_MSG: it rejects with a plain Error, no class or code. */
const IOREDIS_CONNECTION_CLOSED = 'Connection is closed.';
/** What a connection to a Redis that is away fails with: refused, or its socket file gone. */
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOENT']);

/**
 * Whether `err` says Redis is away (restarting, unreachable) rather than that the request or the
 * code is wrong: a command that used up its retries (ioredis `MaxRetriesPerRequestError`,
 * maxRetriesPerRequest: 3 on the API's connections), a connection closed under it (BullMQ's
 * `ConnectionClosedError`, or ioredis's message, which is all ioredis gives), or a connect
 * refused or to a socket file that is gone (ECONNREFUSED, ENOENT from `connect`).
 */
export function isRedisOutage(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === 'MaxRetriesPerRequestError' || err.name === 'ConnectionClosedError') {
    return true;
  }
  if (err.message === IOREDIS_CONNECTION_CLOSED) return true;
  const sys = err as NodeJS.ErrnoException;
  if (sys.code === 'ECONNREFUSED') return true;
  return sys.code !== undefined && CONNECT_CODES.has(sys.code) && sys.syscall === 'connect';
}
