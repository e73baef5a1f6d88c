import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './ports';

/** A private redis-server for one test file: its own port, folder and AOF, so it can be killed. */
export interface TestRedis {
  port: number;
  url: string;
  dir: string;
  /** SIGKILL (no save), as a crash would. */
  kill(): void;
  /** Starts it again on the same port and folder: AOF brings the data back. */
  start(): Promise<void>;
  /** Stops it and removes its folder. */
  stop(): void;
}

function requireRedis(): void {
  const r = spawnSync('redis-server', ['--version']);
  if (r.status !== 0) {
    throw new Error('redis-server not found: apt-get install redis-server (.ci/run does this)');
  }
}

/**
 * The arguments of a redis-server that runs in the background on 127.0.0.1:`port` with its files
 * in `dir` (`name`.pid, `name`.log): AOF on, no RDB snapshots, `noeviction` (as BullMQ needs);
 * `extra` last.
 */
export function redisServerArgs(
  port: number,
  dir: string,
  name: string,
  extra: string[] = [],
): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--appendonly',
    'yes',
    '--save',
    '',
    '--maxmemory-policy',
    'noeviction',
    '--daemonize',
    'yes',
    '--pidfile',
    path.join(dir, `${name}.pid`),
    '--logfile',
    path.join(dir, `${name}.log`),
    ...extra,
  ];
}

/** Starts a private Redis with AOF (fsync always) and `noeviction`, as BullMQ needs. */
export async function startRedis(): Promise<TestRedis> {
  requireRedis();
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-redis-'));
  const port = await freePort();
  const pidFile = path.join(dir, 'redis.pid');
  const launch = async () => {
    execFileSync('redis-server', redisServerArgs(port, dir, 'redis', ['--appendfsync', 'always']));
    for (let i = 0; i < 100; i++) {
      if (
        spawnSync('redis-cli', ['-p', String(port), 'ping'])
          .stdout?.toString()
          .includes('PONG')
      )
        return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server on port ${port} did not answer; see ${dir}/redis.log`);
  };
  const kill = () => {
    if (!existsSync(pidFile)) return;
    const pid = Number(readFileSync(pidFile, 'utf8'));
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    rmSync(pidFile, { force: true });
    // Wait until the port is free, so a restart can bind it.
    for (
      let i = 0;
      i < 100 && spawnSync('redis-cli', ['-p', String(port), 'ping']).status === 0;
      i++
    ) {
      spawnSync('sleep', ['0.05']);
    }
  };
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    kill,
    start: launch,
    stop: () => {
      kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
