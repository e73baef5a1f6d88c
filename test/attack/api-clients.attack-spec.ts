import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { writeTestExperiments } from '../../libs/jobs/src/testing/client';
import { freePort } from '../support/ports';
import { startRedis, type TestRedis } from '../support/redis';
import { startPair, waitUntil, type Pair } from '../support/system';
import { ATTACK_SCALE, recordAttack, timed, type LegitFigures } from './support';

/**
 * Hostile or careless clients of the job API (issue #15, items 9, 14, 15), against the built
 * worker and relay as processes: uploads that must cost nothing before they are checked, form
 * floods, too many parts, cross-site browsers, DNS rebinding, params nested 45,000 deep, and
 * Redis passwords that must never reach the log. While each attack runs, a legitimate client
 * lists jobs through the relay; its success and latency are reported with the attack.
 *
 * The worker's Redis is found through a real Redis Sentinel, both with passwords (the master's
 * in REDIS_URL's userinfo, the sentinel's as `?sentinelPassword=`), so the log can be searched
 * for them.
 */
const full = ATTACK_SCALE.full;
jest.setTimeout(full ? 900_000 : 180_000);
const MB = 1_000_000;
/** (a): each upload's size, and MAX_UPLOAD a little above it (so only the checks refuse it). */
const UPLOAD = full ? 300 * MB : 50 * MB;
const MAX_UPLOAD = UPLOAD + 20 * MB;
const N = full
  ? { a: 3, b: 10, c: 10, d: 50, e: 50, f: 20, g: 50 }
  : { a: 3, b: 3, c: 2, d: 5, e: 5, f: 3, g: 5 };
const MASTER_PASSWORD = `master-${randomBytes(9).toString('hex')}`;
const SENTINEL_PASSWORD = `sentinel-${randomBytes(9).toString('hex')}`;
const ATTACKER = 'http://attacker.example';

interface Answer {
  status: number;
  body: { message?: string; id?: string } & Record<string, unknown>;
  /** Request bytes written before the answer came (or the connection ended). */
  sent: number;
  ms: number;
}

interface Part {
  name: string;
  filename?: string;
  /** A file of this many zero bytes, or a field value of this many 'x'. */
  size?: number;
  value?: string;
  /** A part with no Content-Disposition (junk, counted as a part). */
  junk?: boolean;
}

const CHUNK = Buffer.alloc(64 * 1024);
const X_CHUNK = Buffer.alloc(64 * 1024, 'x');

/** A multipart body as a generator of chunks, and its length. */
function multipart(parts: Part[]): {
  type: string;
  length: number;
  chunks: () => Generator<Buffer>;
} {
  const boundary = `----attack${randomBytes(8).toString('hex')}`;
  const heads = parts.map((p) =>
    Buffer.from(
      `--${boundary}\r\n` +
        (p.junk
          ? 'X-Junk: 1\r\n'
          : `Content-Disposition: form-data; name="${p.name}"` +
            (p.filename !== undefined
              ? `; filename="${p.filename}"\r\nContent-Type: application/octet-stream\r\n`
              : '\r\n')) +
        '\r\n',
    ),
  );
  const tail = Buffer.from(`--${boundary}--\r\n`);
  const contentLength = (p: Part) =>
    p.value !== undefined ? Buffer.byteLength(p.value) : (p.size ?? 0);
  const length =
    heads.reduce((n, h, i) => n + h.length + contentLength(parts[i]) + 2, 0) + tail.length;
  function* chunks(): Generator<Buffer> {
    for (const [i, p] of parts.entries()) {
      yield heads[i];
      if (p.value !== undefined) yield Buffer.from(p.value);
      else {
        const fill = p.filename !== undefined ? CHUNK : X_CHUNK;
        for (let left = p.size ?? 0; left > 0; left -= fill.length) {
          yield left >= fill.length ? fill : fill.subarray(0, left);
        }
      }
      yield Buffer.from('\r\n');
    }
    yield tail;
  }
  return { type: `multipart/form-data; boundary=${boundary}`, length, chunks };
}

/**
 * One request, its body written chunk by chunk with backpressure and stopped as soon as the
 * answer arrives (as a careful client would); resolves with the answer and the bytes sent.
 */
function send(
  port: number,
  opts: {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    json?: string;
    form?: ReturnType<typeof multipart>;
    chunked?: boolean;
    /** Goes away (destroys the connection) after sending this many bytes. */
    abortAfter?: number;
  },
): Promise<Answer> {
  const t0 = performance.now();
  const headers: Record<string, string> = { connection: 'close', ...opts.headers };
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(opts.json));
  }
  if (opts.form) {
    headers['content-type'] = opts.form.type;
    if (!opts.chunked) headers['content-length'] = String(opts.form.length);
  }
  return new Promise<Answer>((resolve) => {
    let sent = 0;
    let answered = false;
    const req = request({
      host: '127.0.0.1',
      port,
      method: opts.method ?? 'POST',
      path: opts.path ?? '/jobs',
      headers,
      agent: false,
    });
    const timer = setTimeout(() => req.destroy(new Error('no answer in 120 s')), 120_000);
    const finish = (status: number, text: string) => {
      clearTimeout(timer);
      let body: Answer['body'] = {};
      try {
        body = JSON.parse(text) as Answer['body'];
      } catch {
        body = { text };
      }
      resolve({ status, body, sent, ms: performance.now() - t0 });
      req.destroy();
    };
    req.on('response', (res) => {
      answered = true;
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => finish(res.statusCode ?? 0, text));
      res.on('error', () => finish(res.statusCode ?? 0, text));
    });
    req.on('error', (err) => {
      if (!answered) finish(0, err.message);
    });
    void (async () => {
      if (opts.json !== undefined) return void req.end(opts.json);
      if (!opts.form) return void req.end();
      for (const chunk of opts.form.chunks()) {
        if (answered || req.destroyed) return;
        if (opts.abortAfter !== undefined && sent >= opts.abortAfter) {
          return void req.destroy(new Error('went away'));
        }
        sent += chunk.length;
        if (!req.write(chunk)) {
          await Promise.race([once(req, 'drain'), once(req, 'response'), once(req, 'close')]).catch(
            () => undefined,
          );
        }
      }
      if (!answered && !req.destroyed) req.end();
    })();
  });
}

/** The size of every file under `dir` added up (files that vanish meanwhile count 0). */
function bytesUnder(dir: string): number {
  let total = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    const p = path.join(dir, name);
    try {
      const st = statSync(p);
      total += st.isDirectory() ? bytesUnder(p) : st.size;
    } catch {
      /* removed meanwhile */
    }
  }
  return total;
}

/** Samples bytesUnder(dir) every 10 ms until stopped; the largest growth over the start. */
function watchBytes(dir: string): { stop(): number } {
  const start = bytesUnder(dir);
  let peak = start;
  const timer = setInterval(() => (peak = Math.max(peak, bytesUnder(dir))), 10);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(peak, bytesUnder(dir)) - start;
    },
  };
}

function rssMb(pid: number): number {
  const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) / 1024;
}

describe(`job API against hostile clients (${ATTACK_SCALE.name})`, () => {
  let master: TestRedis;
  let sentinel: ChildProcess;
  let sentinelDir: string;
  let pair: Pair;
  let data: string;
  let direct: number;
  let relay: number;

  /** Runs `attack` while a legitimate client lists jobs through the relay, back to back. */
  async function duringAttack<T>(attack: () => Promise<T>): Promise<[T, LegitFigures]> {
    const legit: LegitFigures = { tried: 0, ok: 0, latenciesMs: [] };
    let done = false;
    const loop = (async () => {
      do {
        const t = await timed(async () => {
          const res = await fetch(`http://127.0.0.1:${relay}/jobs?limit=1`);
          return res.status === 200 && Array.isArray(await res.json());
        });
        legit.tried++;
        if (t.ok) legit.ok++;
        legit.latenciesMs.push(t.ms);
        await new Promise((r) => setTimeout(r, 20));
      } while (!done);
    })();
    try {
      return [await attack(), legit];
    } finally {
      done = true;
      await loop;
    }
  }

  const jobCount = async () =>
    ((await (await fetch(`http://127.0.0.1:${direct}/jobs?limit=1000`)).json()) as unknown[])
      .length;

  beforeAll(async () => {
    master = await startRedis();
    spawnSync('redis-cli', [
      '-p',
      String(master.port),
      'config',
      'set',
      'requirepass',
      MASTER_PASSWORD,
    ]);
    sentinelDir = path.join(master.dir, 'sentinel');
    mkdirSync(sentinelDir);
    const sentinelPort = await freePort();
    const conf = path.join(sentinelDir, 'sentinel.conf');
    writeFileSync(
      conf,
      [
        `port ${sentinelPort}`,
        'bind 127.0.0.1',
        `dir ${sentinelDir}`,
        `requirepass ${SENTINEL_PASSWORD}`,
        `sentinel monitor gsc 127.0.0.1 ${master.port} 1`,
        `sentinel auth-pass gsc ${MASTER_PASSWORD}`,
        '',
      ].join('\n'),
    );
    sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
    await waitUntil('the sentinel to know the master', () =>
      spawnSync(
        'redis-cli',
        [
          '-p',
          String(sentinelPort),
          '--no-auth-warning',
          '-a',
          SENTINEL_PASSWORD,
          'sentinel',
          'get-master-addr-by-name',
          'gsc',
        ],
        { encoding: 'utf8' },
      ).stdout.includes(String(master.port)),
    );
    const experiments = path.join(master.dir, 'experiments');
    mkdirSync(experiments);
    writeTestExperiments(experiments);
    // (g): a params pattern with nested quantifiers, as an admin may write one.
    writeFileSync(
      path.join(experiments, 'redos.yaml'),
      [
        'name: redos',
        'runner: process',
        'command: ["true"]',
        'params:',
        '  type: object',
        '  properties:',
        "    name: { type: string, pattern: '^(a+)+$' }",
        '',
      ].join('\n'),
    );
    pair = await startPair({
      worker: {
        EXPERIMENTS_DIR: experiments,
        REDIS_URL: `redis+sentinel://:${MASTER_PASSWORD}@127.0.0.1:${sentinelPort}/gsc?sentinelPassword=${SENTINEL_PASSWORD}`,
        MAX_UPLOAD: String(MAX_UPLOAD),
      },
    });
    data = pair.workerEnv.DATA_FOLDER;
    direct = pair.ports.api;
    relay = pair.ports.relay;
  });

  afterAll(async () => {
    await pair?.stop();
    sentinel?.kill('SIGKILL');
    master?.stop();
    if (pair) rmSync(pair.dir, { recursive: true, force: true });
  });

  it('(a) writes nothing of an upload to a missing experiment or with bad params, and answers before reading it', async () => {
    const bytes = watchBytes(data);
    const [answers, legit] = await duringAttack(async () => {
      const out: Answer[] = [];
      for (let i = 0; i < N.a; i++) {
        for (const [experiment, params] of [
          ['no-such-experiment', '{}'],
          ['hello', '{"name": 3}'],
        ]) {
          const form = multipart([
            { name: 'experiment', value: experiment },
            { name: 'params', value: params },
            { name: 'files', filename: 'big.bin', size: UPLOAD },
          ]);
          out.push(await send(i % 2 ? direct : relay, { form }));
        }
      }
      return out;
    });
    const written = bytes.stop();
    const statuses = answers.map((a) => a.status);
    recordAttack('api-upload-before-check', {
      attack: `multipart uploads of ${UPLOAD / MB} MB to a missing experiment and with bad params`,
      times: answers.length,
      gotThrough: written,
      counted: 'bytes written under DATA_FOLDER, .uploads included (peak)',
      legit,
      extra: {
        statuses,
        maxSentBeforeAnswerMB: Math.max(...answers.map((a) => a.sent)) / MB,
        answerMsMax: Math.round(Math.max(...answers.map((a) => a.ms))),
      },
    });
    expect(written).toBe(0);
    expect(statuses).toEqual(answers.map((_, i) => (i % 2 === 0 ? 404 : 400)));
    expect(answers[0].body.message).toMatch(/experiment 'no-such-experiment' is not installed/);
    expect(answers[1].body.message).toMatch(/params\.name must be string/);
    // Answered before the body was read: far less than the upload was sent.
    for (const a of answers) expect(a.sent).toBeLessThan(UPLOAD / 2);
    expect(legit.ok).toBe(legit.tried);
  });

  it('(b) refuses 200 form fields of 1 MB with 413 naming the limit, with bounded memory', async () => {
    const pid = pair.worker.child.pid!;
    const rssBefore = rssMb(pid);
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssMb(pid))), 20);
    const created = await jobCount();
    const [answers, legit] = await duringAttack(async () => {
      const out: Answer[] = [];
      for (let i = 0; i < N.b; i++) {
        const fields: Part[] = Array.from({ length: 200 }, (_, k) => ({ name: `f${k}`, size: MB }));
        const form = multipart([{ name: 'experiment', value: 'quick' }, ...fields]);
        // Chunked: no Content-Length that would have it refused before a byte is read.
        out.push(await send(i % 2 ? direct : relay, { form, chunked: true }));
        const many = multipart([
          { name: 'experiment', value: 'quick' },
          ...Array.from({ length: 1000 }, (_, k) => ({ name: `g${k}`, value: 'x' })),
        ]);
        out.push(await send(i % 2 ? direct : relay, { form: many }));
      }
      return out;
    });
    clearInterval(sampler);
    const growth = rssPeak - rssBefore;
    const named = (a: Answer) =>
      a.status === 413 &&
      /over the limit of 100 KiB per field|more than 20 fields/.test(a.body.message ?? '');
    const jobs = (await jobCount()) - created;
    recordAttack('api-form-fields', {
      attack: '200 form fields of 1 MB (and 1,000 small fields) in one submission',
      times: answers.length,
      gotThrough: answers.filter((a) => !named(a)).length + jobs,
      counted: 'submissions not refused with 413 naming the limit, plus jobs created',
      legit,
      extra: { rssBeforeMB: Math.round(rssBefore), rssGrowthMB: Math.round(growth) },
    });
    expect(answers.map((a) => [a.status, a.body.message])).toEqual(
      answers.map((_, i) => [
        413,
        i % 2 === 0
          ? "field 'f0' is over the limit of 100 KiB per field; send data as files"
          : 'more than 20 fields in one submission',
      ]),
    );
    expect(jobs).toBe(0);
    // Far below the 200 MB of fields sent: the fields were never held.
    expect(growth).toBeLessThan(64);
    expect(legit.ok).toBe(legit.tried);
  });

  it('(c) refuses too many parts and oversized files with 413 naming the limit, leaving nothing', async () => {
    const created = await jobCount();
    const bytes = watchBytes(data);
    const aborted: Answer[] = [];
    const [answers, legit] = await duringAttack(async () => {
      const out: { kind: string; a: Answer }[] = [];
      for (let i = 0; i < N.c; i++) {
        const port = i % 2 ? direct : relay;
        const files = Array.from({ length: 150 }, (_, k) => ({
          name: 'files',
          filename: `f${k}.bin`,
          size: 1000,
        }));
        const exp = { name: 'experiment', value: 'copy-input' };
        out.push({ kind: 'files', a: await send(port, { form: multipart([exp, ...files]) }) });
        const junk = Array.from({ length: 300 }, () => ({ name: '', junk: true, value: 'x' }));
        out.push({ kind: 'parts', a: await send(port, { form: multipart([exp, ...junk]) }) });
        const big = multipart([exp, { name: 'files', filename: 'big.bin', size: MAX_UPLOAD + MB }]);
        out.push({ kind: 'file size', a: await send(port, { form: big, chunked: true }) });
        // Content-Length alone tells this one is too large (the fields' room is ~4 MB).
        const huge = multipart([
          exp,
          { name: 'files', filename: 'huge.bin', size: 10 * MAX_UPLOAD },
        ]);
        out.push({ kind: 'declared size', a: await send(port, { form: huge }) });
        const cut = multipart([exp, { name: 'files', filename: 'cut.bin', size: UPLOAD }]);
        aborted.push(await send(port, { form: cut, abortAfter: UPLOAD / 5 }));
      }
      return out;
    });
    // The client that went away half-way got no answer; what it sent is gone with it.
    await waitUntil(
      'the aborted uploads to be removed',
      () => (readdirSync(path.join(data, 'jobs', '.uploads')).length === 0 ? true : undefined),
      5_000,
    ).catch(() => undefined);
    const written = bytes.stop();
    const limitOf: Record<string, RegExp> = {
      files: /^more than 100 files in one submission$/,
      parts: /^more than 120 parts in one submission$/,
      'file size': /^the files are larger than the limit of .* \(MAX_UPLOAD\)$/,
      'declared size': /^the upload is .*, over the limit of .* \(MAX_UPLOAD\)$/,
    };
    const named = ({ kind, a }: { kind: string; a: Answer }) =>
      a.status === 413 && limitOf[kind].test(a.body.message ?? '');
    const jobs = (await jobCount()) - created;
    const left = readdirSync(path.join(data, 'jobs', '.uploads'));
    recordAttack('api-parts-and-sizes', {
      attack:
        `150 files, 300 junk parts, a file over MAX_UPLOAD (${MAX_UPLOAD / MB} MB) chunked ` +
        'and declared, an upload cut off half-way',
      times: answers.length + aborted.length,
      gotThrough: answers.filter((x) => !named(x)).length + jobs + left.length,
      counted: 'submissions not refused with 413 naming the limit, jobs created, files left',
      legit,
      extra: { peakBytesWritten: written, statuses: answers.map((x) => x.a.status) },
    });
    expect(
      answers.filter((x) => !named(x)).map((x) => [x.kind, x.a.status, x.a.body.message]),
    ).toEqual([]);
    expect(jobs).toBe(0);
    expect(aborted.map((a) => a.status)).toEqual(aborted.map(() => 0));
    expect(left).toEqual([]);
    // The oversized file was cut at the limit: never more than MAX_UPLOAD on disk.
    expect(written).toBeLessThanOrEqual(MAX_UPLOAD);
    expect(legit.ok).toBe(legit.tried);
  });

  it('(d) refuses cross-origin POST /jobs and DELETE /jobs/:id, direct and through the relay', async () => {
    const target = (await (
      await fetch(`http://127.0.0.1:${direct}/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ experiment: 'sleepy', params: {} }),
      })
    ).json()) as { id: string };
    const created = await jobCount();
    const origin = { origin: ATTACKER };
    const [answers, legit] = await duringAttack(async () => {
      const out: Answer[] = [];
      for (let i = 0; i < N.d; i++) {
        for (const port of [direct, relay]) {
          const json = JSON.stringify({ experiment: 'quick', params: {} });
          out.push(await send(port, { json, headers: origin }));
          const form = multipart([{ name: 'experiment', value: 'quick' }]);
          out.push(await send(port, { form, headers: origin }));
          out.push(
            await send(port, { method: 'DELETE', path: `/jobs/${target.id}`, headers: origin }),
          );
        }
      }
      return out;
    });
    const jobs = (await jobCount()) - created;
    const state = (
      (await (await fetch(`http://127.0.0.1:${direct}/jobs/${target.id}`)).json()) as {
        state: string;
      }
    ).state;
    recordAttack('api-cross-origin', {
      attack: `POST /jobs (JSON and multipart) and DELETE /jobs/:id with Origin ${ATTACKER}`,
      times: answers.length,
      gotThrough:
        jobs + (state === 'cancelled' ? 1 : 0) + answers.filter((a) => a.status !== 403).length,
      counted: 'jobs created or cancelled, and requests not refused with 403',
      legit,
      extra: { targetState: state },
    });
    expect(answers.filter((a) => a.status !== 403)).toEqual([]);
    expect(answers[0].body.message).toMatch(
      /cross-origin POST from 'http:\/\/attacker.example' refused.*API_HOSTS/,
    );
    expect(jobs).toBe(0);
    expect(['queued', 'running']).toContain(state);
    // The same DELETE without Origin (curl, the front's server) is served.
    const cancel = await send(direct, { method: 'DELETE', path: `/jobs/${target.id}` });
    expect([cancel.status, cancel.body.state]).toEqual([200, 'cancelled']);
    expect(legit.ok).toBe(legit.tried);
  });

  it('(e) serves nothing to a foreign Host (DNS rebinding), direct and through the relay', async () => {
    const created = await jobCount();
    const host = { host: 'attacker.example' };
    const [answers, legit] = await duringAttack(async () => {
      const out: Answer[] = [];
      for (let i = 0; i < N.e; i++) {
        for (const port of [direct, relay]) {
          out.push(await send(port, { method: 'GET', path: '/jobs', headers: host }));
          const json = JSON.stringify({ experiment: 'quick', params: {} });
          out.push(await send(port, { json, headers: { host: 'attacker.example:8001' } }));
        }
      }
      return out;
    });
    const jobs = (await jobCount()) - created;
    const served = answers.filter((a) => a.status < 400).length;
    recordAttack('api-dns-rebinding', {
      attack: 'GET /jobs and POST /jobs with Host attacker.example',
      times: answers.length,
      gotThrough: served + jobs,
      counted: 'requests served, and jobs created',
      legit,
      extra: { statuses: [...new Set(answers.map((a) => a.status))] },
    });
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 421));
    expect(answers[0].body.message).toMatch(
      /Host 'attacker.example' is not a name of this API.*API_HOSTS/,
    );
    expect(jobs).toBe(0);
    expect(legit.ok).toBe(legit.tried);
  });

  it('(f) refuses params nested 45,000 deep with 400 and creates no record', async () => {
    const created = await jobCount();
    const deep = `{"a":${'['.repeat(45_000)}${']'.repeat(45_000)}}`;
    const folders = () => bytesUnder(path.join(data, 'jobs', 'quick'));
    const before = folders();
    const [answers, legit] = await duringAttack(async () => {
      const out: Answer[] = [];
      for (let i = 0; i < N.f; i++) {
        const port = i % 2 ? direct : relay;
        out.push(await send(port, { json: `{"experiment":"quick","params":${deep}}` }));
        const form = multipart([
          { name: 'experiment', value: 'quick' },
          { name: 'params', value: deep },
        ]);
        out.push(await send(port, { form }));
      }
      return out;
    });
    const jobs = (await jobCount()) - created;
    recordAttack('api-deep-params', {
      attack: 'params nested 45,000 levels deep, as JSON and as a multipart field',
      times: answers.length,
      gotThrough: jobs + answers.filter((a) => a.status !== 400).length,
      counted: 'records created, and requests not refused with 400',
      legit,
      extra: { statuses: [...new Set(answers.map((a) => a.status))] },
    });
    expect(answers.map((a) => [a.status, a.body.message])).toEqual(
      answers.map(() => [
        400,
        'params are nested more than 64 levels deep; flatten them (at most 64)',
      ]),
    );
    expect(jobs).toBe(0);
    expect(folders()).toBe(before);
    expect(legit.ok).toBe(legit.tried);
  });

  it('(g) answers params that make a schema pattern backtrack exponentially with 400 at once, the worker serving meanwhile', async () => {
    // '^(a+)+$' against 'aaa…ab' backtracks 2^n times: 27 characters took V8's backtracking
    // engine 2 s on the event loop, and each more doubles it. The daemon falls back to V8's linear-time engine.
    // Experiments whose patterns V8's linear-time engine cannot run (a lookahead; the `u`
    // flag), which backtrack for ever even with the fallback on: added while the worker runs,
    // they are refused when read (at start they would fail the start, naming the file).
    const experiments = pair.workerEnv.EXPERIMENTS_DIR;
    for (const [name, pattern] of [
      ['redos-lookahead', '^(?=(a+)+$)'],
      ['redos-unicode', '^(\\p{L}+)+$'],
    ])
      writeFileSync(
        path.join(experiments, `${name}.yaml`),
        `name: ${name}\nrunner: process\ncommand: ["true"]\nparams:\n  type: object\n` +
          `  properties:\n    name: { type: string, pattern: '${pattern}' }\n`,
      );
    const logText = () => pair.worker.stdout() + pair.worker.stderr();
    await waitUntil('both files refused', () =>
      ['redos-lookahead', 'redos-unicode'].every((n) =>
        new RegExp(`${n}\\.yaml[^\\n]*could freeze the worker`).test(logText()),
      ),
    );
    const created = await jobCount();
    const evil = JSON.stringify({ name: `${'a'.repeat(5_000)}b` });
    const unrunnable: Answer[] = [];
    const [answers, legit] = await duringAttack(async () => {
      const out: Answer[] = [];
      for (let i = 0; i < N.g; i++) {
        const port = i % 2 ? direct : relay;
        out.push(await send(port, { json: `{"experiment":"redos","params":${evil}}` }));
        for (const experiment of ['redos-lookahead', 'redos-unicode'])
          unrunnable.push(
            await send(port, { json: `{"experiment":"${experiment}","params":${evil}}` }),
          );
        const form = multipart([
          { name: 'experiment', value: 'redos' },
          { name: 'params', value: evil },
        ]);
        out.push(await send(port, { form }));
      }
      return out;
    });
    const jobs = (await jobCount()) - created;
    recordAttack('api-params-redos', {
      attack:
        "params whose string makes the experiment's pattern '^(a+)+$' backtrack exponentially (5,001 characters), as JSON and as a multipart field; the same to experiments whose patterns V8's linear-time engine cannot run (`^(?=(a+)+$)`, `^(\\p{L}+)+$` with `u`)",
      times: answers.length + unrunnable.length,
      gotThrough:
        jobs +
        answers.filter((a) => a.status !== 400).length +
        unrunnable.filter((a) => a.status !== 404).length,
      counted:
        'records created, requests not refused with 400, and requests to the lookahead and `u` experiments (refused at load) not answered 404',
      legit,
      extra: {
        statuses: [...new Set(answers.map((a) => a.status))],
        slowestMs: Math.max(...answers.map((a) => a.ms)),
      },
    });
    expect(answers.map((a) => [a.status, a.body.message])).toEqual(
      answers.map(() => [400, 'params.name must match pattern "^(a+)+$"']),
    );
    expect(jobs).toBe(0);
    expect(legit.ok).toBe(legit.tried);
    // The two files the linear-time engine cannot serve were refused, saying why.
    expect(unrunnable.map((a) => a.status)).toEqual(unrunnable.map(() => 404));
    const log = logText();
    expect(log).toMatch(/redos-lookahead\.yaml[^\n]*could freeze the worker[^\n]*lookaround/);
    expect(log).toMatch(/redos-unicode\.yaml[^\n]*could freeze the worker[^\n]*`u` flag/);
    // The pattern still means what it says.
    const ok = await send(direct, { json: '{"experiment":"redos","params":{"name":"aaaa"}}' });
    expect(ok.status).toBe(201);
  });

  it('(f) never logs or serves the Redis passwords', async () => {
    const [health, legit] = await duringAttack(async () =>
      (await fetch(`http://127.0.0.1:${relay}/health`)).text(),
    );
    const log = pair.worker.stdout() + pair.worker.stderr();
    const leaks = [MASTER_PASSWORD, SENTINEL_PASSWORD].map(
      (secret) => log.split(secret).length - 1 + (health.split(secret).length - 1),
    );
    recordAttack('api-secrets-in-log', {
      attack:
        'REDIS_URL with a master password and ?sentinelPassword=, searched in the log and /health',
      times: 2,
      gotThrough: leaks[0] + leaks[1],
      counted: 'occurrences of either password in the worker log and /health',
      legit,
      extra: { logLines: log.split('\n').length },
    });
    expect(leaks).toEqual([0, 0]);
    // The log does say where Redis is (redacted), so the check looked at the right lines.
    expect(log).toContain('sentinelPassword=***');
    expect(legit.ok).toBe(legit.tried);
  });
});
