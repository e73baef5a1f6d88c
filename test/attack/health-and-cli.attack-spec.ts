import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exitCode, runCli, type DaemonProcess } from '../support/daemon';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, waitUntil, workerEnvIn } from '../support/system';
import { ATTACK_SCALE, recordAttack, timed, type LegitFigures } from './support';

jest.setTimeout(180_000);

/**
 * Attacks on what tells the truth about a worker and on the CLI that reads it:
 * - a flood of /health, /health/ready and /metrics while Redis is down (each used to wait out
 *   BullMQ's reconnects, over a minute): every answer must come within the bound, and the
 *   liveness check of a legitimate monitor keeps answering;
 * - a hostile "worker" answering `gpu-sidecar jobs get`: it must not make the CLI write outside
 *   the folder it was run in, nor follow it elsewhere, whatever it answers or FILE says.
 */
const BOUND_MS = 5_000;

function listen(handler: (req: IncomingMessage, res: import('node:http').ServerResponse) => void) {
  return new Promise<{ server: Server; url: string }>((resolve) => {
    const server = createServer(handler);
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }),
    );
  });
}

describe('attacks on health and the CLI', () => {
  let redis: TestRedis;
  let dir: string;

  beforeAll(async () => {
    redis = await startRedis();
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-attack-health-'));
  });

  afterAll(() => {
    redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('health-flood-redis-down: every /health, /health/ready and /metrics answers within 5 s', async () => {
    const w = await workerEnvIn(dir, keygen(dir), {
      redisUrl: redis.url,
      extra: { GPU_SAMPLE_INTERVAL: '200ms' },
    });
    const api = `http://127.0.0.1:${w.api}`;
    const worker: DaemonProcess = runCli(['worker'], w.env);
    try {
      await worker.waitForLog('worker ready', 60_000);
      redis.kill();
      // Down long enough for BullMQ's reconnects to be seconds apart (see redis-down.e2e-spec).
      await waitUntil(
        'BullMQ reconnects backed off',
        () => worker.stderr().split('queue connection error').length - 1 >= 16,
        60_000,
      );
      const waves = ATTACK_SCALE.full ? 40 : 6;
      const perWave = 60;
      const routes = ['/health', '/health/ready', '/metrics'];
      let late = 0;
      let unanswered = 0;
      let slowestMs = 0;
      const legit: LegitFigures = { tried: 0, ok: 0, latenciesMs: [] };
      let attacking = true;
      const monitor = (async () => {
        while (attacking) {
          const r = await timed(async () => {
            const res = await fetch(`${api}/health/live`, {
              signal: AbortSignal.timeout(BOUND_MS),
            });
            return res.status === 200;
          });
          legit.tried++;
          if (r.ok) legit.ok++;
          legit.latenciesMs.push(r.ms);
          await new Promise((res) => setTimeout(res, 100));
        }
      })();
      for (let i = 0; i < waves; i++) {
        await Promise.all(
          Array.from({ length: perWave }, async (_, k) => {
            const t0 = performance.now();
            try {
              const res = await fetch(`${api}${routes[k % routes.length]}`, {
                signal: AbortSignal.timeout(60_000),
              });
              await res.text();
            } catch {
              unanswered++;
            }
            const ms = performance.now() - t0;
            slowestMs = Math.max(slowestMs, ms);
            if (ms > BOUND_MS) late++;
          }),
        );
      }
      attacking = false;
      await monitor;
      const alive = worker.child.exitCode === null;
      recordAttack('health-flood-redis-down', {
        attack: `${perWave} concurrent /health, /health/ready, /metrics with Redis down`,
        times: waves * perWave,
        gotThrough: late + unanswered + (alive ? 0 : 1),
        counted: `answers later than ${BOUND_MS / 1000} s or never, a worker that died`,
        legit,
        extra: { slowestMs: Math.round(slowestMs) },
      });
      expect({ late, unanswered, alive }).toEqual({ late: 0, unanswered: 0, alive: true });
      expect(legit.ok).toBe(legit.tried);
      expect(legit.tried).toBeGreaterThan(0);
    } finally {
      await worker.stop('SIGKILL');
      await redis.start();
    }
  });

  it('jobs-get-hostile-worker: nothing written outside the folder, no redirect followed', async () => {
    // Where a redirect would lead: any request here got through.
    let elsewhere = 0;
    const other = await listen((_req, res) => {
      elsewhere++;
      res.end('stolen');
    });
    const seen: string[] = [];
    const hostile = await listen((req, res) => {
      seen.push(req.url ?? '');
      const u = req.url ?? '';
      if (u.endsWith('/files/good.txt')) return res.end('legitimate content\n');
      if (u.includes('redirect')) {
        res.writeHead(302, { location: `${other.url}/x` });
        return res.end();
      }
      // Names it suggests for the file, each an escape.
      res.writeHead(200, {
        'content-disposition': 'attachment; filename="../../escaped.txt"',
        'content-type': 'application/octet-stream',
      });
      res.end('hostile content\n');
    });
    const root = mkdtempSync(path.join(tmpdir(), 'gsc-attack-get-'));
    const here = path.join(root, 'a', 'b');
    mkdirSync(here, { recursive: true });
    const files = [
      '../../escaped.txt',
      'x/../../../escaped.txt',
      './../escaped.txt',
      '..',
      '/',
      'redirect/file.txt',
      'ok/../../../../etc/escaped.txt',
      'out%2F..%2F..%2Fescaped.txt',
      'disposition.txt',
    ];
    const rounds = ATTACK_SCALE.full ? 5 : 1;
    const legit: LegitFigures = { tried: 0, ok: 0, latenciesMs: [] };
    try {
      for (let round = 0; round < rounds; round++) {
        for (const file of files) {
          const p = runCli(['jobs', 'get', 'j1', file, '--url', hostile.url, '--force'], {}, here);
          await exitCode(p, 30_000);
        }
        const r = await timed(async () => {
          const p = runCli(
            ['jobs', 'get', 'j1', 'good.txt', '--url', hostile.url, '--force'],
            {},
            here,
          );
          return (
            (await exitCode(p, 30_000)) === 0 &&
            readFileSync(path.join(here, 'good.txt'), 'utf8') === 'legitimate content\n'
          );
        });
        legit.tried++;
        if (r.ok) legit.ok++;
        legit.latenciesMs.push(r.ms);
      }
      // Files anywhere under root but in `here`, and requests outside the job's files.
      const outside = (d: string): string[] =>
        readdirSync(d, { withFileTypes: true }).flatMap((e) =>
          e.isDirectory()
            ? outside(path.join(d, e.name))
            : d === here
              ? []
              : [path.join(d, e.name)],
        );
      const escapedFiles = outside(root);
      const strayRequests = seen.filter((u) => !u.startsWith('/jobs/j1/files/'));
      const stray = spawnSync('ls', ['/etc/escaped.txt']).status === 0 ? 1 : 0;
      recordAttack('jobs-get-hostile-worker', {
        attack: 'jobs get: FILE with ../, a hostile filename, a redirect elsewhere',
        times: rounds * files.length,
        gotThrough: escapedFiles.length + strayRequests.length + elsewhere + stray,
        counted: 'files outside the folder, requests outside /jobs/ID/files/, redirects followed',
        legit,
        extra: { filesHere: readdirSync(here).sort() },
      });
      expect({ escapedFiles, strayRequests, elsewhere, stray }).toEqual({
        escapedFiles: [],
        strayRequests: [],
        elsewhere: 0,
        stray: 0,
      });
      expect(legit.ok).toBe(legit.tried);
    } finally {
      hostile.server.close();
      other.server.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
