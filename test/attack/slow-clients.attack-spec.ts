import { once } from 'node:events';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { STREAM_LIMITS } from '../../libs/jobs/src/api/stream-limits';
import { waitUntil } from '../support/system';
import { fdCount } from './http-clients';
import { startJobHost, type JobHost } from './job-host';
import { ATTACK_SCALE, legitLoop, recordAttack, type LegitFigures } from './support';

/**
 * API clients that never read (or barely read) what a job makes, against the built worker on
 * API_LISTEN: event streams of a job that prints the longest progress lines it may, as often as
 * they are passed on, whose clients stopped reading; and downloads whose clients read 1 KB now
 * and then. Short form (CI): 32 stalled streams for 12 s, 200 trickling downloads;
 * ATTACK_SCALE=full: 45 s, then the trickling downloads waited on until the stall cut (60 s).
 */
const FULL = ATTACK_SCALE.full;
const MB = 1e6;
const HOLD_MS = FULL ? 45_000 : 12_000;
const TRICKLES = 200;

jest.setTimeout(FULL ? 5 * 60_000 : 120_000);

/** 60,000 bytes of \x01 (390 KB of JSON as `\u0001`) and 2,000 printable ones. */
const PAD = '\x01'.repeat(60_000) + 'y'.repeat(2_000);
const PROGRESS_SH = `i=0
while :; do i=$((i % 99 + 1)); printf '::progress:: %d ' $i; cat "$PAD_FILE"; echo; sleep 0.05; done
`;

const experiments = (dir: string): Record<string, string> => ({
  'progress.yaml': `name: progress
runner: process
command: ["sh", "${path.join(dir, 'progress.sh')}"]
env: { PAD_FILE: "${path.join(dir, 'pad.txt')}" }
attempts: 1
timeout: 30m
params: { type: object }
`,
  'big.yaml': `name: big
runner: process
command: ["sh", "-c", "head -c 33554432 /dev/urandom > $JOB_OUTPUT/big.bin; echo small > $JOB_OUTPUT/small.txt; head -c 25165824 /dev/urandom | base64; sleep 1800"]
attempts: 1
timeout: 30m
params: { type: object }
`,
});

function rss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** GET `p` on a connection of its own; resolves with the socket and the status once it came. */
async function open(port: number, p: string): Promise<{ s: Socket; status: number }> {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => undefined);
  await once(s, 'connect');
  s.write(`GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  const [first] = (await once(s, 'data')) as [Buffer];
  s.pause();
  return { s, status: Number(/^HTTP\/1\.1 (\d+)/.exec(first.toString('latin1'))?.[1] ?? 0) };
}

/**
 * The legitimate user: in turn `GET /test` and a download of a small file, each on a connection
 * from 127.0.0.2 (another address than the attacker's), until stop().
 */
function legitimate(port: number, small: string): { stop(): Promise<LegitFigures> } {
  const get = (p: string) =>
    new Promise<boolean>((resolve) => {
      const req = request(
        { host: '127.0.0.1', port, path: p, localAddress: '127.0.0.2', agent: false },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode === 200));
        },
      );
      req.setTimeout(5_000, () => req.destroy());
      req.on('error', () => resolve(false));
      req.end();
    });
  return legitLoop((i) => get(i % 2 ? small : '/test'), 100);
}

describe('API clients that stop reading, against the built worker', () => {
  let host: JobHost;
  let port: number;
  let pid: number;

  beforeAll(async () => {
    host = await startJobHost(experiments, {}, { 'progress.sh': PROGRESS_SH, 'pad.txt': PAD });
    port = Number(new URL(host.api.base).port);
    pid = host.daemon.child.pid!;
  });

  afterAll(async () => {
    await host?.stop();
  });

  it('stalled event streams of a job printing 64 KiB progress lines: the worker’s memory stays flat', async () => {
    const id = await host.api.submit('progress');
    await waitUntil('the job reports progress', async () => (await host.api.job(id)).progress > 0);
    const recordBytes = JSON.stringify(await host.api.job(id)).length;
    const clients = STREAM_LIMITS.events.perJob;
    const base = rss(pid);
    const legit = legitimate(port, '/test');
    const stalled: Socket[] = [];
    for (let i = 0; i < clients; i++) stalled.push((await open(port, `/jobs/${id}/events`)).s);
    let peak = base;
    const t0 = performance.now();
    while (performance.now() - t0 < HOLD_MS) {
      await new Promise((r) => setTimeout(r, 250));
      peak = Math.max(peak, rss(pid));
    }
    const cut = stalled.filter((s) => s.readyState !== 'open').length;
    for (const s of stalled) s.destroy();
    await host.api.call('DELETE', `/jobs/${id}`);
    const growthMB = Math.round((peak - base) / MB);
    const figures = {
      attack: `${clients} event streams that stop reading, ${HOLD_MS / 1000} s, job printing 62 KB progress lines 20x/s`,
      times: clients,
      gotThrough: Math.max(0, growthMB - 50),
      counted: 'MB of worker RSS growth beyond 50 MB while they held on',
      legit: await legit.stop(),
      extra: {
        rssMB: [Math.round(base / MB), Math.round(peak / MB)],
        growthMBperS: +((peak - base) / MB / (HOLD_MS / 1000)).toFixed(1),
        recordBytes,
        streamsCut: cut,
      },
    };
    recordAttack('job-events-stalled-clients', figures);
    expect(figures.gotThrough).toBe(0);
    expect(recordBytes).toBeLessThan(4_096);
    expect(figures.legit.ok).toBe(figures.legit.tried);
  });

  it('downloads that read 1 KB now and then stop at their cap and are cut; others still download', async () => {
    const id = await host.api.submit('big');
    await waitUntil('the job wrote its output', async () => {
      const files = (await host.api.call('GET', `/jobs/${id}/files`)).body.files ?? [];
      const log = path.join(host.jobDir('big', id), 'logs', 'output.log');
      return (
        files.length === 2 &&
        files.some((f: { size: number }) => f.size === 33554432) &&
        existsSync(log) &&
        statSync(log).size >= 32 * 1024 * 1024
      );
    });
    const fds = fdCount(pid);
    const legit = legitimate(port, `/jobs/${id}/files/small.txt`);
    const opened = await Promise.all(
      Array.from({ length: TRICKLES }, (_, i) =>
        open(port, i % 4 ? `/jobs/${id}/files/big.bin` : `/jobs/${id}/logs`),
      ),
    );
    const held = opened.filter((o) => o.status === 200).map((o) => o.s);
    const refused = opened.filter((o) => o.status === 503);
    for (const o of refused) o.s.destroy();
    const trickle = setInterval(() => held.forEach((s) => s.read(1024)), 2_000);
    await new Promise((r) => setTimeout(r, 3_000));
    const fdsHeld = fdCount(pid) - fds;
    // Full form: wait for the stall cut (60 s without a chunk taken).
    // Counted on the worker's side: a paused client socket does not read the end it was sent.
    let stillOpen = 0;
    let probe = 0;
    if (FULL) {
      await new Promise((r) => setTimeout(r, 70_000));
      // Each download holds two descriptors (its connection and its file).
      stillOpen = Math.max(0, Math.round((fdCount(pid) - fds) / 2));
      const p = await open(port, `/jobs/${id}/files/big.bin`);
      probe = p.status;
      p.s.destroy();
    }
    clearInterval(trickle);
    for (const s of held) s.destroy();
    await host.api.call('DELETE', `/jobs/${id}`);
    const cap = STREAM_LIMITS.downloads.perAddress;
    const figures = {
      attack: `downloads (files and plain logs) reading 1 KB every 2 s, ${TRICKLES} at once from one address`,
      times: TRICKLES,
      gotThrough: Math.max(0, held.length - cap) + stillOpen,
      counted: `downloads held beyond the cap of ${cap} per address${FULL ? ', and still open after 70 s' : ''}`,
      legit: await legit.stop(),
      extra: {
        held: held.length,
        refused503: refused.length,
        workerFdsWhileHeld: fdsHeld,
        ...(FULL ? { stillOpenAfter70s: stillOpen, downloadAfter70s: probe } : {}),
      },
    };
    recordAttack('job-output-trickle-downloads', figures);
    expect(figures.gotThrough).toBe(0);
    expect(held.length).toBe(cap);
    expect(refused.length).toBe(TRICKLES - cap);
    if (FULL) expect(probe).toBe(200);
    expect(figures.legit.ok).toBe(figures.legit.tried);
  });
});
