import { execFile, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { loadWorkerConfig, silentLogger } from '../../libs/config/src';
import { JobsModule, JobsRuntime } from '../../libs/jobs/src';
import { STREAM_LIMITS } from '../../libs/jobs/src/api/stream-limits';
import { JobsService } from '../../libs/jobs/src/jobs.service';
import { JobRecordsRepository } from '../../libs/jobs/src/queue/job-records.repository';
import { JobsClient } from '../../libs/jobs/src/testing/client';
import { startRedis, type TestRedis } from '../support/redis';

jest.setTimeout(60_000);

const execFileP = promisify(execFile);

/** 1,000 bytes every test knows. */
const DATA = Buffer.from(
  Array.from({ length: 1000 }, (_, i) => String.fromCharCode(33 + ((i * 7) % 90))).join(''),
);

/** `odd` leaves what a hostile job may leave in output/: a FIFO, links, a folder link. */
const EXPERIMENTS: Record<string, string> = {
  'odd.yaml': `name: odd
runner: process
command: ["sh", "-c", "cd $JOB_OUTPUT && cp $JOB_DIR/../../../data.bin . && mkfifo pipe && ln -s /dev/zero zero && ln -s /etc/passwd passwd && mkdir sub && echo s > sub/s.txt && ln -s sub sublink && printf x > 'résumé 文件.txt'"]
params: { type: object }
`,
  'running.yaml': `name: running
runner: process
command: ["sh", "-c", "echo '::progress:: 10 ten'; echo started; sleep 60"]
attempts: 1
params: { type: object }
`,
};

interface Worker {
  app: INestApplication;
  rt: JobsRuntime;
  api: JobsClient;
  port: number;
  data: string;
}

/** The job module alone in a Nest app (half-open connections allowed, as in the worker). */
async function startWorker(redis: TestRedis): Promise<Worker> {
  const data = mkdtempSync(path.join(tmpdir(), 'gsc-output-data-'));
  writeFileSync(path.join(data, 'data.bin'), DATA);
  const exp = mkdtempSync(path.join(tmpdir(), 'gsc-output-exp-'));
  for (const [f, text] of Object.entries(EXPERIMENTS)) writeFileSync(path.join(exp, f), text);
  const config = loadWorkerConfig({
    TUNNEL_KEY_FILE: '/unused',
    REDIS_URL: redis.url,
    DATA_FOLDER: data,
    EXPERIMENTS_DIR: exp,
    GPU_DEVICES: 'none',
    WORKER_NAME: 'int-output',
    WORKER_CONCURRENCY: '4',
  });
  const app = await NestFactory.create(
    JobsModule.forRoot(config, silentLogger(), { killGraceMs: 500 }),
    { logger: false, abortOnError: false },
  );
  (app.getHttpServer() as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  await app.listen(0, '127.0.0.1');
  const url = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  return {
    app,
    rt: app.get(JobsRuntime),
    api: new JobsClient(url),
    port: Number(new URL(url).port),
    data,
  };
}

/** Sends raw request text on a new connection; resolves with all the server sent until it closed. */
async function raw(port: number, text: string, halfClose = false): Promise<string> {
  const s = connect(port, '127.0.0.1');
  await once(s, 'connect');
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  s.write(text);
  if (halfClose) s.end();
  await once(s, 'close');
  return got;
}

describe('job output routes against a real Redis', () => {
  let redis: TestRedis;
  let w: Worker;
  let odd: string;
  let running: string;
  let file: string;

  beforeAll(async () => {
    redis = await startRedis();
    w = await startWorker(redis);
    odd = await w.api.submit('odd');
    running = await w.api.submit('running');
    // A FIFO in output/ does not hold the fsync of a succeeded job's output.
    expect((await w.api.waitFor(odd, ['succeeded', 'failed'])).state).toBe('succeeded');
    await w.api.waitFor(running, ['running']);
    for (let i = 0; i < 200 && (await w.api.job(running)).progress !== 10; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    file = `${w.api.base}/jobs/${odd}/files/data.bin`;
  });
  afterAll(async () => {
    await w?.app.close();
    redis?.stop();
  });

  describe('downloads', () => {
    it('serves the file whole, with Accept-Ranges and validators', async () => {
      const res = await fetch(file);
      expect(res.status).toBe(200);
      expect(res.headers.get('accept-ranges')).toBe('bytes');
      expect(res.headers.get('content-length')).toBe('1000');
      expect(res.headers.get('etag')).toMatch(/^"[0-9a-f]+-3e8-[0-9a-f]+"$/);
      expect(res.headers.get('last-modified')).toMatch(/GMT$/);
      expect(res.headers.get('content-disposition')).toBe('attachment; filename="data.bin"');
      expect(Buffer.from(await res.arrayBuffer())).toEqual(DATA);
    });

    it('answers a single range with 206 and the bytes asked, a suffix too', async () => {
      const res = await fetch(file, { headers: { Range: 'bytes=10-19' } });
      expect(res.status).toBe(206);
      expect(res.headers.get('content-range')).toBe('bytes 10-19/1000');
      expect(res.headers.get('content-length')).toBe('10');
      expect(Buffer.from(await res.arrayBuffer())).toEqual(DATA.subarray(10, 20));
      const tail = await fetch(file, { headers: { Range: 'bytes=-5' } });
      expect(tail.headers.get('content-range')).toBe('bytes 995-999/1000');
      expect(Buffer.from(await tail.arrayBuffer())).toEqual(DATA.subarray(995));
    });

    it('answers 416 past the end, and the whole file to several ranges or a stale If-Range', async () => {
      const past = await fetch(file, { headers: { Range: 'bytes=1000-' } });
      expect(past.status).toBe(416);
      expect(past.headers.get('content-range')).toBe('bytes */1000');
      expect(((await past.json()) as { message: string }).message).toMatch(/outside.*1000 bytes/);
      const multi = await fetch(file, { headers: { Range: 'bytes=0-1,5-6' } });
      expect(multi.status).toBe(200);
      expect((await multi.arrayBuffer()).byteLength).toBe(1000);
      const etag = (await fetch(file, { method: 'HEAD' })).headers.get('etag')!;
      const same = await fetch(file, { headers: { Range: 'bytes=0-0', 'If-Range': etag } });
      expect(same.status).toBe(206);
      await same.arrayBuffer();
      const stale = await fetch(file, { headers: { Range: 'bytes=0-0', 'If-Range': '"old"' } });
      expect(stale.status).toBe(200);
      await stale.arrayBuffer();
    });

    it('refuses downloads past the per-address limit with 503 naming it, and gives the slot back', async () => {
      // A file far larger than the socket buffers: a client that does not read holds it.
      const big = path.join(w.data, 'jobs', 'odd', odd, 'output', 'big.bin');
      writeFileSync(big, Buffer.alloc(32 * 1024 * 1024));
      const held = [];
      for (let i = 0; i < STREAM_LIMITS.downloads.perAddress; i++) {
        const s = connect(w.port, '127.0.0.1');
        await once(s, 'connect');
        s.write(`GET /jobs/${odd}/files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n`);
        await once(s, 'data');
        s.pause();
        held.push(s);
      }
      for (const p of [`/jobs/${odd}/files/data.bin`, `/jobs/${odd}/logs`]) {
        const over = await fetch(`${w.api.base}${p}`);
        expect(over.status).toBe(503);
        expect(over.headers.get('retry-after')).toBe('5');
        expect(over.headers.get('content-disposition')).toBeNull();
        expect(await over.json()).toMatchObject({
          statusCode: 503,
          limit: 'downloads per address',
          max: STREAM_LIMITS.downloads.perAddress,
        });
      }
      // HEAD sends no body and takes no slot.
      expect((await fetch(file, { method: 'HEAD' })).status).toBe(200);
      for (const s of held) s.destroy();
      rmSync(big);
      const deadline = Date.now() + 5_000;
      let status = 0;
      while (Date.now() < deadline && status !== 200) {
        const res = await fetch(file);
        status = res.status;
        await res.arrayBuffer();
      }
      expect(status).toBe(200);
    });

    it('answers HEAD with the headers only', async () => {
      const res = await raw(
        w.port,
        `HEAD /jobs/${odd}/files/data.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      );
      expect(res).toMatch(/^HTTP\/1.1 200/);
      expect(res).toMatch(/content-length: 1000/i);
      expect(res.endsWith('\r\n\r\n')).toBe(true);
    });

    it('lets curl -C - resume a cut download, and finish a complete one', async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'gsc-resume-'));
      const out = path.join(dir, 'data.bin');
      writeFileSync(out, DATA.subarray(0, 300));
      // Asynchronously: the server answering curl runs in this process.
      await execFileP('curl', ['-sS', '-f', '-m', '10', '-C', '-', '-o', out, file]);
      expect(readFileSync(out)).toEqual(DATA);
      // Resuming at the end: 416, which curl takes as "already complete" (exit 0).
      await execFileP('curl', ['-sS', '-m', '10', '-C', '-', '-o', out, file]);
      expect(readFileSync(out)).toEqual(DATA);
    });

    it('names a file whose name is not ASCII, in a header Node can send', async () => {
      const name = encodeURIComponent('résumé 文件.txt');
      const res = await fetch(`${w.api.base}/jobs/${odd}/files/${name}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-disposition')).toContain(`filename*=UTF-8''${name}`);
      expect(await res.text()).toBe('x');
    });

    it('refuses FIFOs, devices and links (files and folders) at once, and lists none of them', async () => {
      const expectations: [string, number][] = [
        ['pipe', 404],
        ['zero', 400],
        ['passwd', 400],
        ['sublink/s.txt', 400],
        ['sub', 404],
      ];
      for (const [f, status] of expectations) {
        const res = await fetch(`${w.api.base}/jobs/${odd}/files/${f}`, {
          signal: AbortSignal.timeout(5_000),
        });
        expect({ f, status: res.status }).toEqual({ f, status });
        expect(await res.text()).not.toMatch(/root:/);
      }
      expect((await w.api.call('GET', `/jobs/${odd}/files`)).body.files).toEqual([
        { path: 'data.bin', size: 1000 },
        { path: 'résumé 文件.txt', size: 1 },
        { path: 'sub/s.txt', size: 2 },
      ]);
    });
  });

  describe('logs', () => {
    it('does not serve a log that was replaced by a link or a FIFO, and does not block on it', async () => {
      const id = await w.api.submit('odd');
      await w.api.waitFor(id, ['succeeded']);
      const log = path.join(w.data, 'jobs', 'odd', id, 'logs', 'output.log');
      execFileSync('rm', ['-f', log]);
      symlinkSync('/etc/passwd', log);
      const linked = await w.api.call('GET', `/jobs/${id}/logs`);
      expect(linked.status).toBe(400);
      expect(JSON.stringify(linked.body)).not.toMatch(/root:/);
      execFileSync('rm', ['-f', log]);
      execFileSync('mkfifo', [log]);
      const res = await fetch(`${w.api.base}/jobs/${id}/logs`, {
        signal: AbortSignal.timeout(5_000),
      });
      expect(res.status).toBe(404);
      const follow = await fetch(`${w.api.base}/jobs/${id}/logs?follow=1`, {
        signal: AbortSignal.timeout(5_000),
      });
      expect(await follow.text()).toBe('');
    });

    it('answers HEAD on a running job’s follow at once', async () => {
      const res = await fetch(`${w.api.base}/jobs/${running}/logs?follow=1`, {
        method: 'HEAD',
        signal: AbortSignal.timeout(5_000),
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    });

    it('ends a follow when its client half-closes, after what the log holds', async () => {
      const got = await raw(
        w.port,
        `GET /jobs/${running}/logs?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n`,
        true,
      );
      expect(got).toMatch(/^HTTP\/1.1 200/);
      expect(got).toContain('started');
      expect(got.endsWith('0\r\n\r\n')).toBe(true); // the chunked body's proper end
    });
  });

  describe('events', () => {
    const events = (text: string) =>
      text
        .split('\n\n')
        .filter((b) => b.includes('event:'))
        .map((b) => ({
          id: /^id: (.*)$/m.exec(b)?.[1],
          event: /^event: (.*)$/m.exec(b)?.[1],
          state: JSON.parse(/^data: (.*)$/m.exec(b)?.[1] ?? '{}').state,
        }));

    it('gives a finished job’s final state once to a first request, and 204 to a reconnect that saw it', async () => {
      const first = await fetch(`${w.api.base}/jobs/${odd}/events`);
      expect(first.status).toBe(200);
      expect(events(await first.text())).toEqual([
        { id: 'succeeded', event: 'state', state: 'succeeded' },
      ]);
      const again = await fetch(`${w.api.base}/jobs/${odd}/events`, {
        headers: { 'Last-Event-ID': 'succeeded' },
      });
      expect(again.status).toBe(204);
      expect(await again.text()).toBe('');
      // A reconnect that missed the end (its last id is older) gets the end.
      const missed = await fetch(`${w.api.base}/jobs/${odd}/events`, {
        headers: { 'Last-Event-ID': 'running.33' },
      });
      expect(events(await missed.text())).toEqual([
        { id: 'succeeded', event: 'state', state: 'succeeded' },
      ]);
    });

    it('gives every event of a running job an id, and answers HEAD at once', async () => {
      const head = await fetch(`${w.api.base}/jobs/${running}/events`, {
        method: 'HEAD',
        signal: AbortSignal.timeout(5_000),
      });
      expect(head.status).toBe(200);
      expect(head.headers.get('content-type')).toBe('text/event-stream');
      const got = await raw(
        w.port,
        `GET /jobs/${running}/events HTTP/1.1\r\nHost: x\r\n\r\n`,
        true, // half-closed: what there is now, then the end
      );
      expect(events(got.slice(got.indexOf('\r\n\r\n')))).toEqual([
        { id: 'running.10', event: 'state', state: 'running' },
      ]);
    });

    it('sends a client that stopped reading only the newest state once it reads again', async () => {
      const bus = w.app.get(JobRecordsRepository).bus;
      const rec = await w.app.get(JobsService).get(running);
      const s = connect(w.port, '127.0.0.1');
      await once(s, 'connect');
      s.write(`GET /jobs/${running}/events HTTP/1.1\r\nHost: x\r\n\r\n`);
      await once(s, 'data');
      s.pause();
      // 400 updates of 64 KB (26 MB): far more than the socket's buffers take.
      const updates = 400;
      for (let i = 1; i <= updates; i++) {
        bus.emit(`event:${running}`, { ...rec, message: `update ${i} ${'x'.repeat(64_000)}` });
        if (i % 50 === 0) await new Promise((r) => setTimeout(r, 20));
      }
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.resume();
      await waitForText(() => got, `update ${updates} `);
      s.destroy();
      const sent = [...got.matchAll(/"message":"update (\d+) /g)].map((m) => Number(m[1]));
      // What the buffers held when it stopped reading, then the newest alone: never all 400.
      expect(sent.at(-1)).toBe(updates);
      expect(sent.length).toBeLessThan(updates / 2);
    });

    it('refuses the stream past the per-job limit with 503, Retry-After and the limit named', async () => {
      const held = [];
      for (let i = 0; i < STREAM_LIMITS.events.perJob; i++) {
        const s = connect(w.port, '127.0.0.1');
        await once(s, 'connect');
        s.write(`GET /jobs/${running}/events HTTP/1.1\r\nHost: x\r\n\r\n`);
        await once(s, 'data');
        held.push(s);
      }
      const over = await fetch(`${w.api.base}/jobs/${running}/events`);
      expect(over.status).toBe(503);
      expect(over.headers.get('retry-after')).toBe('5');
      expect(await over.json()).toMatchObject({
        statusCode: 503,
        limit: 'events per job',
        max: STREAM_LIMITS.events.perJob,
      });
      held[0].destroy();
      // Its slot is given back as soon as its client is gone.
      const deadline = Date.now() + 5_000;
      let status = 0;
      while (Date.now() < deadline) {
        const c = new AbortController();
        const res = await fetch(`${w.api.base}/jobs/${running}/events`, { signal: c.signal });
        status = res.status;
        c.abort();
        if (status === 200) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(status).toBe(200);
      for (const s of held) s.destroy();
    });
  });

  it('removes an old job’s folder at retention without following the links it left', async () => {
    const id = await w.api.submit('odd');
    await w.api.waitFor(id, ['succeeded']);
    const outside = mkdtempSync(path.join(tmpdir(), 'gsc-outside-'));
    writeFileSync(path.join(outside, 'keep.txt'), 'keep');
    const dir = path.join(w.data, 'jobs', 'odd', id);
    symlinkSync(outside, path.join(dir, 'output', 'outside'));
    mkdirSync(path.join(dir, 'output', 'deep', 'er'), { recursive: true });
    const removed = await w.rt.service.sweep(Date.now() + 365 * 24 * 3600 * 1000);
    expect(removed).toBeGreaterThan(0);
    expect(existsSync(dir)).toBe(false);
    expect(readdirSync(outside)).toEqual(['keep.txt']);
    expect((await w.api.call('GET', `/jobs/${id}`)).status).toBe(404);
  });
});

async function waitForText(text: () => string, wanted: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!text().includes(wanted)) {
    if (Date.now() > deadline) throw new Error(`'${wanted}' not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
