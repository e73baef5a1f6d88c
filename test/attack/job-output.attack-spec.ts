import { randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { Socket } from 'node:net';
import path from 'node:path';
import { STREAM_LIMITS } from '../../libs/jobs/src/api/stream-limits';
import { JobsClient, testExperiments } from '../../libs/jobs/src/testing/client';
import { startPair, waitUntil, type Pair } from '../support/system';
import {
  closeWait,
  fdCount,
  getText,
  hold,
  legitimateClient,
  rawGet,
  type Held,
} from './http-clients';
import { ATTACK_SCALE, recordAttack, timed } from './support';

jest.setTimeout(ATTACK_SCALE.full ? 900_000 : 120_000);

/** The counts of each attack: the short form (CI, under a minute) or ATTACK_SCALE=full. */
const SCALE = ATTACK_SCALE.full
  ? { symlinkGets: 30_000, fifoGets: 10_000, floodEach: 1_500, clients: 40 }
  : { symlinkGets: 3_000, fifoGets: 2_000, floodEach: 600, clients: 12 };
const PARALLEL = 8;

/**
 * The hostile job: output/a.txt swapped between a file and a link to the secret, output/d
 * between a folder and a link to the secret's folder, output/f between a file and a FIFO.
 */
const HOSTILE_SH = `cd "$JOB_OUTPUT" || exit 1
echo A > a.txt; mkdir d; echo benign > d/secret.txt; echo F > f
while :; do
  ln -sfn "$CANARY_DIR/secret.txt" a.new; mv -fT a.new a.txt; echo A > a.new; mv -fT a.new a.txt
  mv -T d d.old; ln -sfn "$CANARY_DIR" d; rm -f d; mv -T d.old d
  rm -f f.new; mkfifo f.new; mv -fT f.new f; echo F > f.new; mv -fT f.new f
done
`;
/** A job with a 32 MiB output file and a log that starts with 32 MiB (base64), then grows slowly. */
const CHATTY_SH = `head -c 33554432 /dev/urandom > "$JOB_OUTPUT/big.bin"
head -c 25165824 /dev/urandom | base64
while :; do seq 1 200; sleep 0.5; done
`;

function experiments(dir: string, canaryDir: string): string {
  const exp = path.join(dir, 'experiments-attack');
  mkdirSync(exp);
  const t = testExperiments();
  writeFileSync(path.join(exp, 'hello.yaml'), t['hello.yaml']);
  writeFileSync(path.join(exp, 'quick.yaml'), t['quick.yaml']);
  writeFileSync(path.join(exp, 'hostile.sh'), HOSTILE_SH);
  writeFileSync(path.join(exp, 'chatty.sh'), CHATTY_SH);
  const proc = (name: string, command: string, env = '{}') =>
    writeFileSync(
      path.join(exp, `${name}.yaml`),
      `name: ${name}\nrunner: process\ncommand: ${command}\nattempts: 1\ntimeout: 30m\n` +
        `env: ${env}\nparams: { type: object }\n`,
    );
  proc('hostile', `["sh", "${path.join(exp, 'hostile.sh')}"]`, `{ CANARY_DIR: "${canaryDir}" }`);
  proc('chatty', `["sh", "${path.join(exp, 'chatty.sh')}"]`);
  proc('quiet', '["sleep", "1800"]');
  return exp;
}

/** Runs `task(i)` for i < n, `parallel` at a time. */
async function pool(n: number, parallel: number, task: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

/** The largest of three readings of the worker's descriptors, 200 ms apart. */
async function fdBaseline(pid: number): Promise<number> {
  let most = 0;
  for (let i = 0; i < 3; i++) {
    most = Math.max(most, fdCount(pid));
    await new Promise((r) => setTimeout(r, 200));
  }
  return most;
}

describe('job output under attack, through the built relay and worker', () => {
  let pair: Pair;
  let base: string;
  let api: JobsClient;
  const marker = `CANARY-${randomUUID()}`;
  const jobs = { other: '', hostile: '', chatty: '', quiet: '', queued: [] as string[] };

  beforeAll(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'gsc-attack-output-'));
    // The secret: outside DATA_FOLDER, readable by its owner only.
    const canaryDir = path.join(dir, 'canary');
    mkdirSync(canaryDir);
    writeFileSync(path.join(canaryDir, 'secret.txt'), `${marker}\n`);
    chmodSync(path.join(canaryDir, 'secret.txt'), 0o600);
    pair = await startPair({
      worker: { EXPERIMENTS_DIR: experiments(dir, canaryDir), WORKER_CONCURRENCY: '3' },
    });
    base = `http://127.0.0.1:${pair.ports.relay}`;
    api = new JobsClient(base);
    jobs.other = await api.submit('hello', { name: 'Ada' });
    await api.waitFor(jobs.other, ['succeeded']);
    jobs.hostile = await api.submit('hostile');
    jobs.chatty = await api.submit('chatty');
    jobs.quiet = await api.submit('quiet');
    for (const id of [jobs.hostile, jobs.chatty, jobs.quiet]) await api.waitFor(id, ['running']);
    // The slots are full: these stay queued (silent event streams).
    for (let i = 0; i < 7; i++) jobs.queued.push(await api.submit('quiet'));
    await waitUntil('the chatty job wrote its output and its log', async () => {
      const files = await api.call('GET', `/jobs/${jobs.chatty}/files`);
      const log = path.join(pair.workerEnv.DATA_FOLDER, 'jobs', 'chatty', jobs.chatty, 'logs');
      return (
        files.body.files?.some((f: { size: number }) => f.size === 32 * 1024 * 1024) &&
        statSync(path.join(log, 'output.log')).size >= 32 * 1024 * 1024
      );
    });
  });

  afterAll(async () => {
    await pair?.stop({ killAfterMs: 30_000 });
  });

  it('(a) a job swaps its output file and a folder for links to a secret: none of it is served', async () => {
    const legit = legitimateClient(base, jobs.other);
    const paths = ['a.txt', 'd/secret.txt'];
    const seen = { files: 0, refused: 0, noAnswer: 0, canaryBytes: 0 };
    await pool(SCALE.symlinkGets, PARALLEL, async (i) => {
      const r = await getText(base, `/jobs/${jobs.hostile}/files/${paths[i % 2]}`);
      if (!r) seen.noAnswer++;
      else if (r.text.includes(marker)) seen.canaryBytes += r.text.length;
      else if (r.status === 200) seen.files++;
      else seen.refused++;
    });
    const figures = {
      attack: 'GET output/a.txt and output/d/secret.txt while the job swaps them for links',
      times: SCALE.symlinkGets,
      gotThrough: seen.canaryBytes,
      counted: 'bytes of the secret served',
      legit: await legit.stop(),
      extra: seen,
    };
    recordAttack('job-output-symlink-swap', figures);
    expect(figures.gotThrough).toBe(0);
    expect(seen.noAnswer).toBe(0);
    // The race ran: the real files were served, and links met in between were refused.
    expect(seen.files).toBeGreaterThan(0);
    expect(seen.refused).toBeGreaterThan(0);
    expect(figures.legit.ok).toBe(figures.legit.tried);
  });

  it('(c) followers, event streams and downloads whose clients stop reading or go leave nothing held', async () => {
    const pid = pair.worker.child.pid!;
    const ports = { relay: pair.ports.relay, api: pair.ports.api };
    const baseline = await fdBaseline(pid);
    const legit = legitimateClient(base, jobs.other);
    const stalled: Socket[] = [];
    const silent: Socket[] = [];
    for (const port of [ports.relay, ports.api]) {
      for (let i = 0; i < SCALE.clients; i++) {
        // Stop reading: a follower of a 32 MiB log, a download of a 32 MiB file.
        for (const p of [
          `/jobs/${jobs.chatty}/logs?follow=1`,
          `/jobs/${jobs.chatty}/files/big.bin`,
        ]) {
          stalled.push((await rawGet(port, p)).pause());
        }
        // Silent: a follower of a job that prints nothing, events of a queued job.
        silent.push(await rawGet(port, `/jobs/${jobs.quiet}/logs?follow=1`));
        silent.push(await rawGet(port, `/jobs/${jobs.queued[0]}/events`));
      }
    }
    // HEAD on long-lived answers answers headers at once.
    const heads = await Promise.all(
      [`/jobs/${jobs.quiet}/events`, `/jobs/${jobs.quiet}/logs?follow=1`].map((p) =>
        timed(
          async () =>
            (await hold(ports.relay, p, { method: 'HEAD', timeoutMs: 5_000 })).status === 200,
        ),
      ),
    );
    await new Promise((r) => setTimeout(r, 1_000)); // the worker's writes back up
    const held = fdCount(pid);
    // Gone: stalled clients drop their connections; silent ones half go (FIN), half drop.
    for (const s of stalled) s.destroy();
    silent.forEach((s, i) => (i % 2 ? s.destroy() : s.end()));
    const t0 = performance.now();
    let back = -1;
    for (;;) {
      const fds = fdCount(pid);
      const waiting = closeWait([ports.relay, ports.api]);
      if (fds <= baseline && waiting === 0) {
        back = performance.now() - t0;
        break;
      }
      if (performance.now() - t0 > 5_000) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const left = {
      fds: Math.max(0, fdCount(pid) - baseline),
      closeWait: closeWait([ports.relay, ports.api]),
    };
    const headsFailed = heads.filter((h) => !h.ok).length;
    const figures = {
      attack:
        'followers, SSE clients and downloads that stop reading or disconnect (relay and API_LISTEN)',
      times: stalled.length + silent.length,
      gotThrough: left.fds + left.closeWait + headsFailed,
      counted:
        'descriptors and CLOSE-WAIT sockets left 5 s after the clients went, HEADs unanswered',
      legit: await legit.stop(),
      extra: {
        baseline,
        whileHeld: held,
        backToBaselineMs: Math.round(back),
        left,
        headMs: heads.map((h) => Math.round(h.ms)),
      },
    };
    recordAttack('job-output-streams-outlive-clients', figures);
    expect(figures.gotThrough).toBe(0);
    expect(held).toBeGreaterThan(baseline); // the stalled answers really held descriptors
    expect(figures.legit.ok).toBe(figures.legit.tried);
  });

  it('(d) a flood of event streams and followers stops at the caps: /test and POST /jobs still answer', async () => {
    const pid = pair.worker.child.pid!;
    const baseline = await fdBaseline(pid);
    const targets = [jobs.quiet, jobs.hostile, ...jobs.queued];
    const held: Held[] = [];
    const refused: Held[] = [];
    const failed: string[] = [];
    const kinds = ['events', 'logs?follow=1'];
    await pool(2 * SCALE.floodEach, 64, async (i) => {
      const p = `/jobs/${targets[i % targets.length]}/${kinds[Math.floor(i / SCALE.floodEach)]}`;
      try {
        // A request left unanswered is held all the same (keep).
        const h = await hold(pair.ports.relay, p, { timeoutMs: 3_000, keep: true });
        if (h.status === 200 || h.status === 0) held.push(h);
        else refused.push(h);
      } catch (err) {
        failed.push((err as Error).message);
      }
    });
    await Promise.all(refused.map((h) => h.ended));
    const legit = legitimateClient(base, jobs.other);
    await new Promise((r) => setTimeout(r, 3_000));
    const legitFigures = await legit.stop();
    const caps = STREAM_LIMITS.events.total + STREAM_LIMITS.logs.total;
    const over = Math.max(0, held.length - caps);
    const sample = refused[0];
    const figures = {
      attack: 'event streams and log followers opened and held through the relay, over 9 jobs',
      times: 2 * SCALE.floodEach,
      gotThrough: over + (legitFigures.tried - legitFigures.ok),
      counted: 'streams held beyond the caps, legitimate requests locked out',
      legit: legitFigures,
      extra: {
        held: held.length,
        refused503: refused.filter((h) => h.status === 503).length,
        noAnswer: failed.length,
        workerFdsWhileHeld: fdCount(pid) - baseline,
      },
    };
    for (const h of held) h.req.destroy();
    recordAttack('job-output-stream-flood', figures);
    expect(figures.gotThrough).toBe(0);
    expect(held.length).toBe(caps);
    expect(refused.length + held.length).toBe(2 * SCALE.floodEach);
    expect(sample.status).toBe(503);
    expect(sample.res.headers['retry-after']).toBe('5');
    expect(JSON.parse(sample.body())).toMatchObject({ statusCode: 503, limit: expect.any(String) });
    expect(legitFigures.tried).toBeGreaterThan(0);
  });

  it('(b) a job swaps its output file for a FIFO: nothing blocks, and the worker stops on SIGTERM', async () => {
    const legit = legitimateClient(base, jobs.other);
    const seen = { files: 0, refused: 0, noAnswer: 0 };
    await pool(SCALE.fifoGets, PARALLEL, async () => {
      const r = await getText(base, `/jobs/${jobs.hostile}/files/f`, 5_000);
      if (!r) seen.noAnswer++;
      else if (r.status === 200) seen.files++;
      else seen.refused++;
    });
    const legitFigures = await legit.stop();
    const t0 = performance.now();
    const stop = await Promise.race([
      pair.worker.stop('SIGTERM'),
      new Promise((r) => setTimeout(() => r('still running 30 s after SIGTERM'), 30_000)),
    ]);
    const stopMs = performance.now() - t0;
    const figures = {
      attack: 'GET output/f while the job swaps it between a file and a FIFO',
      times: SCALE.fifoGets,
      gotThrough: seen.noAnswer + (legitFigures.tried - legitFigures.ok) + (stop === 0 ? 0 : 1),
      counted: 'requests left hanging, legitimate requests hung, a worker that would not stop',
      legit: legitFigures,
      extra: { ...seen, sigtermExit: stop, sigtermMs: Math.round(stopMs) },
    };
    recordAttack('job-output-fifo-swap', figures);
    expect(figures.gotThrough).toBe(0);
    expect(seen.files).toBeGreaterThan(0);
    expect(seen.refused).toBeGreaterThan(0);
  });
});
