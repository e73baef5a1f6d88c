import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { loadWorkerConfig, silentLogger, type Env } from '../../libs/config/src';
import { JobsModule, JobsRuntime } from '../../libs/jobs/src';
import { JobsClient, writeTestExperiments } from '../../libs/jobs/src/testing/client';
import { startRedis, type TestRedis } from '../support/redis';
import { waitUntil } from '../support/system';

jest.setTimeout(60_000);

/**
 * POST /jobs as hostile or careless clients send it, against the job module in a Nest app and a
 * real Redis: multipart fields must come before files, nothing is written before the submission
 * is checked, each limit answers 413 naming itself, and a body that is not JSON or multipart is
 * refused saying what to send.
 */
interface Worker {
  app: INestApplication;
  api: JobsClient;
  port: number;
  data: string;
  uploads: () => string[];
  /** Closes the app and removes its folders. */
  close(): Promise<void>;
}

async function startWorker(redis: TestRedis, env: Env = {}): Promise<Worker> {
  const data = mkdtempSync(path.join(tmpdir(), 'gsc-submit-data-'));
  const exp = mkdtempSync(path.join(tmpdir(), 'gsc-submit-exp-'));
  writeTestExperiments(exp);
  const config = loadWorkerConfig({
    TUNNEL_KEY_FILE: '/unused',
    REDIS_URL: redis.url,
    DATA_FOLDER: data,
    EXPERIMENTS_DIR: exp,
    GPU_DEVICES: 'none',
    WORKER_NAME: 'submit-test',
    ...env,
  });
  const app = await NestFactory.create(JobsModule.forRoot(config, silentLogger()), {
    logger: false,
    abortOnError: false,
  });
  await app.listen(0, '127.0.0.1');
  const port = Number(new URL(await app.getUrl()).port);
  return {
    app,
    port,
    data,
    api: new JobsClient(`http://127.0.0.1:${port}`),
    uploads: () => readdirSync(path.join(data, 'jobs', '.uploads')),
    close: async () => {
      await app.close();
      for (const d of [data, exp]) rmSync(d, { recursive: true, force: true });
    },
  };
}

type Part = [name: string, value: string] | [name: string, content: Buffer, filename: string];

/** A multipart body with the parts in exactly the order given. */
function form(parts: Part[]): { type: string; body: Buffer } {
  const b = `----t${randomBytes(6).toString('hex')}`;
  const chunks = parts.map(([name, content, filename]) =>
    Buffer.concat([
      Buffer.from(
        `--${b}\r\nContent-Disposition: form-data; name="${name}"` +
          (filename ? `; filename="${filename}"\r\nContent-Type: application/octet-stream` : '') +
          '\r\n\r\n',
      ),
      Buffer.from(content),
      Buffer.from('\r\n'),
    ]),
  );
  return {
    type: `multipart/form-data; boundary=${b}`,
    body: Buffer.concat([...chunks, Buffer.from(`--${b}--\r\n`)]),
  };
}

interface Reply {
  status: number;
  body: { message?: string; id?: string };
}

/**
 * Sends `head` and then holds the connection open without sending the rest (`tail` bytes
 * declared but never sent): resolves with the answer, which must therefore come before the body
 * was read. Or, with `tail` 0, sends everything.
 */
function post(
  port: number,
  type: string | undefined,
  head: Buffer,
  tail = 0,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/jobs',
      agent: false,
      headers: {
        ...(type ? { 'content-type': type } : {}),
        'content-length': String(head.length + tail),
        ...headers,
      },
    });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Reply['body'] });
        req.destroy();
      });
    });
    req.on('error', reject);
    req.write(head);
    if (tail === 0) req.end();
  });
}

const send = (w: Worker, f: { type: string; body: Buffer }) => post(w.port, f.type, f.body);
/** The ids of an experiment's jobs, sorted. */
const jobsOf = async (w: Worker, experiment: string) =>
  ((await w.api.call('GET', `/jobs?experiment=${experiment}`)).body as { id: string }[])
    .map((j) => j.id)
    .sort();

describe('POST /jobs: uploads and bodies', () => {
  let redis: TestRedis;
  let w: Worker;

  beforeAll(async () => {
    redis = await startRedis();
    w = await startWorker(redis, { MAX_UPLOAD: '64KiB' });
  });
  afterAll(async () => {
    await w?.close();
    redis?.stop();
  });

  it('takes fields, then files: the files land in input/, priority and key are honoured', async () => {
    const f = form([
      ['experiment', 'copy-input'],
      ['params', '{}'],
      ['priority', '5'],
      ['key', 'upload-1'],
      ['files', Buffer.from('a,b\n'), 'table.csv'],
      ['files', Buffer.alloc(1000, 1), 'blob.bin'],
    ]);
    const first = await send(w, f);
    expect(first.status).toBe(201);
    expect((await w.api.waitFor(first.body.id!, ['succeeded', 'failed'])).state).toBe('succeeded');
    const input = path.join(w.data, 'jobs', 'copy-input', first.body.id!, 'input');
    expect(readdirSync(input).sort()).toEqual(['blob.bin', 'table.csv']);
    expect(readFileSync(path.join(input, 'table.csv'), 'utf8')).toBe('a,b\n');
    // The same key again: the first job, and the second upload's files are not kept.
    const again = await send(w, f);
    expect([again.status, again.body.id]).toEqual([200, first.body.id]);
    expect(w.uploads()).toEqual([]);
  });

  it('answers 404 for a missing experiment before reading the file, and writes nothing', async () => {
    const { type, head } = cutInFile([['experiment', 'no-such']]);
    // 1 MB more declared and never sent: the answer can only come from the fields.
    const r = await post(w.port, type, head, 1e6);
    expect([r.status, r.body.message]).toEqual([
      404,
      expect.stringMatching(/^experiment 'no-such' is not installed \(installed: .*copy-input/),
    ]);
    expect(w.uploads()).toEqual([]);
  });

  it('answers 400 for bad params before reading the file', async () => {
    const { type, head } = cutInFile([
      ['experiment', 'hello'],
      ['params', '{"name": 3}'],
    ]);
    const r = await post(w.port, type, head, 1e6);
    expect([r.status, r.body.message]).toEqual([400, 'params.name must be string']);
    expect(w.uploads()).toEqual([]);
  });

  it('refuses a file before the experiment field, and a field after a file, naming the fix', async () => {
    const first = await send(
      w,
      form([
        ['files', Buffer.from('x'), 'a.bin'],
        ['experiment', 'copy-input'],
      ]),
    );
    expect([first.status, first.body.message]).toEqual([
      400,
      'experiment is required before the files: send the fields (experiment, params, priority, ' +
        'key) first and the files last (curl -F keeps the order given)',
    ]);
    const late = await send(
      w,
      form([
        ['experiment', 'copy-input'],
        ['files', Buffer.from('x'), 'a.bin'],
        ['params', '{}'],
      ]),
    );
    expect([late.status, late.body.message]).toEqual([
      400,
      "field 'params' came after a file: send the fields (experiment, params, priority, key) " +
        'before the files (curl -F keeps the order given)',
    ]);
    expect(w.uploads()).toEqual([]);
  });

  it('answers 413 naming each limit, and takes what is exactly at it', async () => {
    const exp: Part = ['experiment', 'quick'];
    const atFields = Array.from({ length: 19 }, (_, i): Part => [`f${i}`, 'x']);
    expect((await send(w, form([exp, ...atFields]))).status).toBe(201);
    const overFields = await send(w, form([exp, ...atFields, ['f19', 'x']]));
    expect([overFields.status, overFields.body.message]).toEqual([
      413,
      'more than 20 fields in one submission',
    ]);

    // params of exactly 100 KiB as JSON text, then one byte more.
    const params = (n: number) => `{"s":"${'x'.repeat(n - 8)}"}`;
    expect(params(102_400)).toHaveLength(102_400);
    expect((await send(w, form([exp, ['params', params(102_400)]]))).status).toBe(201);
    const overField = await send(w, form([exp, ['params', params(102_401)]]));
    expect([overField.status, overField.body.message]).toEqual([
      413,
      "field 'params' is over the limit of 100 KiB per field; send data as files",
    ]);

    const files = (n: number) =>
      Array.from({ length: n }, (_, i): Part => ['files', Buffer.from('x'), `f${i}`]);
    const cp: Part = ['experiment', 'copy-input'];
    expect((await send(w, form([cp, ...files(100)]))).status).toBe(201);
    const overFiles = await send(w, form([cp, ...files(101)]));
    expect([overFiles.status, overFiles.body.message]).toEqual([
      413,
      'more than 100 files in one submission',
    ]);

    // MAX_UPLOAD=64KiB for all files together: exactly, then one byte over in the second file.
    const half = Buffer.alloc(32 * 1024, 7);
    expect((await send(w, form([cp, ['a', half, 'a'], ['b', half, 'b']]))).status).toBe(201);
    const overSize = await send(
      w,
      form([cp, ['a', half, 'a'], ['b', Buffer.concat([half, Buffer.from('!')]), 'b']]),
    );
    expect([overSize.status, overSize.body.message]).toEqual([
      413,
      'the files are larger than the limit of 64 KiB for the files of one job (MAX_UPLOAD)',
    ]);
    // Declared far over the limit: refused on the headers alone.
    const declared = await post(w.port, 'multipart/form-data; boundary=x', Buffer.from('--x'), 1e9);
    expect([declared.status, declared.body.message]).toEqual([
      413,
      expect.stringMatching(
        /^the upload is 953\.67 MiB, over the limit of 64 KiB .*\(MAX_UPLOAD\)$/,
      ),
    ]);
    await waitUntil('refused uploads removed', () => w.uploads().length === 0, 5_000);
  });

  it('removes what an upload cut off half-way had written', async () => {
    const before = await jobsOf(w, 'copy-input');
    const { type, head } = cutInFile([['experiment', 'copy-input']]);
    let named = '';
    await new Promise<void>((resolve) => {
      const req = request({
        host: '127.0.0.1',
        port: w.port,
        method: 'POST',
        path: '/jobs',
        headers: {
          'content-type': type,
          'content-length': String(head.length + 30_000),
        },
      });
      req.on('error', () => resolve());
      req.write(head, () => {
        // Written: wait until the worker stored some of it, then go away.
        void waitUntil('the upload to be on disk', () => w.uploads().length > 0, 5_000).then(
          () => {
            named = w.uploads()[0];
            req.destroy();
          },
          () => req.destroy(),
        );
      });
    });
    // Named with this worker's WORKER_NAME, so that its next start knows it as its own.
    expect(named).toMatch(/^submit-test~[0-9a-f-]{36}$/);
    await waitUntil('the cut upload removed', () => w.uploads().length === 0, 5_000);
    expect(await jobsOf(w, 'copy-input')).toEqual(before);
  });

  it('says what to send for a body that is neither JSON nor multipart', async () => {
    const json = Buffer.from('{"experiment":"quick"}');
    const urlencoded = await post(w.port, 'application/x-www-form-urlencoded', json);
    expect([urlencoded.status, urlencoded.body.message]).toEqual([
      415,
      "send the job as JSON with Content-Type: application/json (curl -H 'content-type: " +
        `application/json' -d '{"experiment":...}'), or as multipart/form-data with files; ` +
        "got 'application/x-www-form-urlencoded'",
    ]);
    expect((await post(w.port, 'text/plain', json)).status).toBe(415);
    expect((await post(w.port, undefined, json)).body.message).toMatch(/got no Content-Type$/);
    const empty = await post(w.port, 'application/json', Buffer.alloc(0));
    expect([empty.status, empty.body.message]).toEqual([
      400,
      'experiment is required: the name of an installed experiment',
    ]);
    // `curl -X POST` with no -d: no body at all.
    const none = await rawExchange(
      w.port,
      'POST /jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    expect(none).toMatch(/^HTTP\/1\.1 400 /);
    expect(none).toContain('the body is empty: send {\\"experiment\\": ...} as JSON');
    const array = await post(w.port, 'application/json', Buffer.from('[1]'));
    expect([array.status, array.body.message]).toEqual([
      400,
      'the body must be a JSON object: {"experiment": ...}',
    ]);
    const dup = await send(
      w,
      form([
        ['experiment', 'quick'],
        ['experiment', 'quick'],
      ]),
    );
    expect([dup.status, dup.body.message]).toEqual([400, "field 'experiment' is given twice"]);
  });

  it('refuses params nested 45,000 deep with 400, leaving no record and no folder', async () => {
    const before = await jobsOf(w, 'once');
    const deep = `{"a":${'['.repeat(45_000)}${']'.repeat(45_000)}}`;
    const r = await post(
      w.port,
      'application/json',
      Buffer.from(`{"experiment":"once","params":${deep}}`),
    );
    expect([r.status, r.body.message]).toEqual([
      400,
      'params are nested more than 64 levels deep; flatten them (at most 64)',
    ]);
    const m = await send(
      w,
      form([
        ['experiment', 'once'],
        ['params', deep],
      ]),
    );
    expect([m.status, m.body.message]).toEqual([400, r.body.message]);
    expect(await jobsOf(w, 'once')).toEqual(before);
    expect(existsSync(path.join(w.data, 'jobs', 'once'))).toBe(false);
    // 64 levels are fine.
    const ok = { a: JSON.parse(`${'['.repeat(63)}${']'.repeat(63)}`) as unknown };
    expect((await w.api.call('POST', '/jobs', { experiment: 'quick', params: ok })).status).toBe(
      201,
    );
  });

  it("removes at start its own uploads left by a killed run and any untouched for 24 h, never another worker's fresh one", async () => {
    // DATA_FOLDER as a worker killed mid-upload left it, shared with a worker named gpu2.
    const data = mkdtempSync(path.join(tmpdir(), 'gsc-submit-sweep-'));
    const uploads = path.join(data, 'jobs', '.uploads');
    mkdirSync(uploads, { recursive: true });
    const day = 24 * 3600;
    const left = {
      'submit-sweep~0b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f': 0, // ours, fresh: cut by our kill
      'gpu2~1b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f': 0, // gpu2's, being received now
      'gpu2~2b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f': day + 60, // gpu2's, untouched for a day
      '3b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f': 600, // an older version's name, 10 min old
      '4b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f': 2 * day, // an older version's name, 2 days old
    };
    for (const [name, age] of Object.entries(left)) {
      const f = path.join(uploads, name);
      writeFileSync(f, randomBytes(1000));
      const t = Date.now() / 1000 - age;
      utimesSync(f, t, t);
    }
    const again = await startWorker(redis, { DATA_FOLDER: data, WORKER_NAME: 'submit-sweep' });
    try {
      expect(readdirSync(uploads).sort()).toEqual([
        '3b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f',
        'gpu2~1b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f',
      ]);
    } finally {
      const queue = again.app.get(JobsRuntime).queue as unknown as {
        workers: { waitUntilReady(): Promise<unknown> }[];
      };
      await Promise.all(queue.workers.map((q) => q.waitUntilReady()));
      await again.close();
      rmSync(data, { recursive: true, force: true });
    }
  });

  it('answers 507 before reading a file when the disk is below MIN_FREE_DISK', async () => {
    const full = await startWorker(redis, { MIN_FREE_DISK: '99.99%', WORKER_NAME: 'submit-full' });
    try {
      const { type, head } = cutInFile([['experiment', 'copy-input']]);
      const r = await post(full.port, type, head, 1e6);
      expect([r.status, r.body.message]).toEqual([
        507,
        expect.stringMatching(/below MIN_FREE_DISK 99.99%/),
      ]);
      expect(full.uploads()).toEqual([]);
    } finally {
      // BullMQ (5.x) throws an unhandled 'error' when a worker is closed while its blocking
      // connection is still connecting (RedisConnection.close removes its listeners, then the
      // pending init rejects): wait for the queue workers to be up before closing this one.
      const queue = full.app.get(JobsRuntime).queue as unknown as {
        workers: { waitUntilReady(): Promise<unknown> }[];
      };
      await Promise.all(queue.workers.map((q) => q.waitUntilReady()));
      await full.close();
    }
  });
});

/**
 * The start of a multipart body whose last part is a file of 1,000 bytes, cut in the middle of
 * that file (and its type): the worker has the file's headers but not its end.
 */
function cutInFile(parts: Part[]): { type: string; head: Buffer } {
  const f = form([...parts, ['files', Buffer.alloc(1000, 1), 'cut.bin']]);
  return { type: f.type, head: f.body.subarray(0, f.body.length - 600) };
}

/** Writes `text` on a new connection and resolves with everything read until it closes. */
function rawExchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const s = connect(port, '127.0.0.1', () => s.write(text));
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}
