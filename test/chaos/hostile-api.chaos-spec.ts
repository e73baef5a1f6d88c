import { randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { runCli, type DaemonProcess } from '../support/daemon';
import { freePort, waitForPort } from '../support/ports';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen } from '../support/system';
import { recordChaos, SCALE } from './support';

/**
 * Hostile input against a running built worker's job API (issue #9): generated requests with
 * malformed JSON, wrong types, oversized bodies and headers, unicode and control characters in
 * names, traversal in ids and file paths, hostile upload file names, sent as raw bytes over TCP
 * (so nothing is cleaned up by a client library). Every request must get an answer below 500;
 * afterwards the worker is alive, /test answers, and nothing outside DATA_FOLDER was created or
 * touched: the test folder (a canary folder holding a secret, the worker's cwd, TMPDIR and HOME)
 * is snapshotted, names, sizes and mtimes, before and after.
 *
 * Requests: CHAOS_SCALE=full 5,000; short (npm test) 1,000.
 */
jest.setTimeout(SCALE.full ? 900_000 : 300_000);
const RUNS = SCALE.full ? 5_000 : 1_000;
const SECRET = `canary-${randomBytes(12).toString('hex')}`;

interface Reply {
  status: number;
  head: string;
  body: Buffer;
}

/** Sends raw request bytes on a new connection; resolves with the status line's code (0 = none). */
function raw(port: number, bytes: Buffer, halfClose = false, timeoutMs = 15_000): Promise<Reply> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = connect(port, '127.0.0.1');
    const done = () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, end < 0 ? all.length : end).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      resolve({
        status: m ? Number(m[1]) : 0,
        head,
        body: end < 0 ? Buffer.alloc(0) : all.subarray(end + 4),
      });
    };
    const timer = setTimeout(() => s.destroy(), timeoutMs);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => undefined);
    s.on('close', done);
    // The server may answer (413, 431) and close before the whole body is written. Raw bytes
    // are followed by a half-close, so an incomplete request is ended instead of waited on
    // (Node's server then drops it: it does not answer a request the client stopped sending).
    if (halfClose) s.end(bytes);
    else s.write(bytes, () => undefined);
  });
}

function request(
  method: string,
  target: string,
  headers: [string, string][],
  body?: Buffer,
): Buffer {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
  for (const [k, v] of headers) lines.push(`${k}: ${v}`);
  if (body) lines.push(`Content-Length: ${body.length}`);
  return Buffer.concat([
    Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'utf8'),
    body ?? Buffer.alloc(0),
  ]);
}

/** Every entry under `dir` except `skip`: type, size, mode and mtime. */
function snapshot(dir: string, skip: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = path.join(d, name);
      if (p === skip) continue;
      const st = lstatSync(p);
      out.set(
        p,
        `${st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 'f'} ${st.size} ${st.mode} ${st.mtimeMs}`,
      );
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

// ---- generators
const nasty = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom(
    '../../canary/secret.txt',
    '..\\..\\canary',
    '\u0000',
    'hello\u0000',
    'hello\r\nX-Injected: 1',
    '\u202eolleh',
    'héllo',
    '🙂',
    '%2e%2e%2f',
    'a'.repeat(10_000),
    '',
    ' ',
    'hello',
    '__proto__',
    'constructor',
  ),
);
const wrongTyped = fc.oneof(
  nasty,
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.anything({ maxDepth: 2 }), { maxLength: 4 }),
  fc.dictionary(nasty, fc.anything({ maxDepth: 2 }), { maxKeys: 4 }),
);
const traversal = fc.oneof(
  fc.constantFrom(
    '../../../canary/secret.txt',
    '..%2f..%2f..%2fcanary%2fsecret.txt',
    '%2e%2e/%2e%2e/%2e%2e/canary/secret.txt',
    '%252e%252e%252f%252e%252e%252fcanary',
    '....//....//canary',
    '..\\..\\..\\canary\\secret.txt',
    '%2F..%2F..%2Fetc%2Fpasswd',
    '/etc/passwd',
    '//etc/passwd',
    'escape',
    'escape/../out.json',
    'nested/../../job.json',
    'out.json%00.png',
    '%00',
    'nested/deep.txt',
    'out.json',
    '.',
    '..',
    '~',
    'a'.repeat(5000),
  ),
  fc
    .array(
      fc.constantFrom(
        '..',
        '.',
        '%2e%2e',
        '%2f',
        'canary',
        'secret.txt',
        '%00',
        '\\',
        'nested',
        '%252e',
      ),
      {
        minLength: 1,
        maxLength: 8,
      },
    )
    .map((parts) => parts.join('/')),
  fc.string({ unit: 'binary', maxLength: 30 }).map(encodeURIComponent),
);

type Case =
  | { kind: 'malformed-json'; text: string }
  | { kind: 'wrong-types'; body: Record<string, unknown> }
  | { kind: 'oversized-body'; size: number }
  | { kind: 'oversized-header'; size: number }
  | { kind: 'query'; experiment: string; state: string; limit: string }
  | { kind: 'id'; method: 'GET' | 'DELETE'; id: string; suffix: string }
  | { kind: 'files'; id: 'valid' | string; file: string }
  | { kind: 'upload'; filename: string; field: string }
  | { kind: 'raw'; bytes: Uint8Array };

const caseArb: fc.Arbitrary<Case> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .oneof(
        fc.string({ maxLength: 200 }),
        fc.json().map((j) => j.slice(0, Math.max(1, j.length - 1))),
        fc.constantFrom(
          '{',
          '{"experiment":',
          '{"experiment":"hello","params":{',
          '[]',
          'null',
          '"x"',
          '{"a":1}}',
        ),
      )
      .map((text) => ({ kind: 'malformed-json' as const, text })),
  },
  {
    weight: 4,
    arbitrary: fc
      .record(
        { experiment: wrongTyped, params: wrongTyped, priority: wrongTyped, key: wrongTyped },
        { requiredKeys: [] },
      )
      .map((body) => ({ kind: 'wrong-types' as const, body })),
  },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 200_000, max: 3_000_000 })
      .map((size) => ({ kind: 'oversized-body' as const, size })),
  },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 20_000, max: 200_000 })
      .map((size) => ({ kind: 'oversized-header' as const, size })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({ experiment: nasty, state: nasty, limit: fc.oneof(nasty, fc.integer().map(String)) })
      .map((q) => ({ kind: 'query' as const, ...q })),
  },
  {
    weight: 3,
    arbitrary: fc
      .record({
        method: fc.constantFrom('GET' as const, 'DELETE' as const),
        id: fc.oneof(nasty.map(encodeURIComponent), traversal),
        suffix: fc.constantFrom('', '/logs', '/files', '/events', '/logs?follow=1'),
      })
      .map((c) => ({ kind: 'id' as const, ...c })),
  },
  {
    weight: 5,
    arbitrary: fc
      .record({ id: fc.oneof(fc.constant('valid'), traversal), file: traversal })
      .map((c) => ({ kind: 'files' as const, ...c })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({
        filename: fc.oneof(traversal, nasty),
        field: fc.oneof(fc.constant('files'), nasty),
      })
      .map((c) => ({ kind: 'upload' as const, ...c })),
  },
  {
    weight: 1,
    arbitrary: fc.uint8Array({ maxLength: 300 }).map((bytes) => ({ kind: 'raw' as const, bytes })),
  },
);

const json = [['Content-Type', 'application/json']] as [string, string][];

/** Header values cannot hold CR/LF (that would be another header): strip them from generated text. */
const headerSafe = (s: string) => s.replace(/[\r\n]/g, '');

function build(c: Case, validId: string): Buffer {
  switch (c.kind) {
    case 'malformed-json':
      return request('POST', '/jobs', json, Buffer.from(c.text));
    case 'wrong-types':
      return request('POST', '/jobs', json, Buffer.from(JSON.stringify(c.body)));
    case 'oversized-body': {
      const filler = 'x'.repeat(c.size);
      return request(
        'POST',
        '/jobs',
        json,
        Buffer.from(`{"experiment":"echo","params":{"p":"${filler}"}}`),
      );
    }
    case 'oversized-header':
      return request('GET', '/jobs', [['X-Big', 'a'.repeat(c.size)]]);
    case 'query': {
      const q = new URLSearchParams({ experiment: c.experiment, state: c.state, limit: c.limit });
      return request('GET', `/jobs?${q.toString()}`, []);
    }
    case 'id':
      return request(c.method, `/jobs/${c.id}${c.suffix}`, []);
    case 'files':
      return request('GET', `/jobs/${c.id === 'valid' ? validId : c.id}/files/${c.file}`, []);
    case 'upload': {
      const boundary = `----chaos${randomBytes(6).toString('hex')}`;
      const part = (headers: string, content: string) =>
        `--${boundary}\r\n${headers}\r\n\r\n${content}\r\n`;
      const body = Buffer.from(
        part('Content-Disposition: form-data; name="experiment"', 'echo') +
          part('Content-Disposition: form-data; name="params"', '{"upload":true}') +
          part(
            `Content-Disposition: form-data; name="${headerSafe(c.field).replace(/"/g, '')}"; filename="${headerSafe(c.filename).replace(/"/g, '%22')}"\r\nContent-Type: application/octet-stream`,
            SECRET.replace('canary', 'upload'),
          ) +
          `--${boundary}--\r\n`,
        'utf8',
      );
      return request(
        'POST',
        '/jobs',
        [['Content-Type', `multipart/form-data; boundary=${boundary}`]],
        body,
      );
    }
    case 'raw':
      return Buffer.from(c.bytes);
  }
}

describe(`job API under hostile input (${SCALE.name}: ${RUNS} requests)`, () => {
  let root: string;
  let data: string;
  let redis: TestRedis;
  let worker: DaemonProcess;
  let port: number;
  let before: Map<string, string>;
  let validId: string;
  const statuses = new Map<number, number>();

  beforeAll(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'gsc-hostile-'));
    data = path.join(root, 'data');
    for (const d of ['canary', 'cwd', 'tmp', 'home', 'experiments']) mkdirSync(path.join(root, d));
    writeFileSync(path.join(root, 'canary', 'secret.txt'), SECRET);
    // The job writes its params and a few files, and a link pointing out of its folder.
    writeFileSync(
      path.join(root, 'experiments', 'echo.yaml'),
      `name: echo
runner: process
command: ["sh", "-c", "cat \\"$JOB_PARAMS\\" > \\"$JOB_OUTPUT/out.json\\"; mkdir -p \\"$JOB_OUTPUT/nested\\"; echo deep > \\"$JOB_OUTPUT/nested/deep.txt\\"; ln -s ${root}/canary/secret.txt \\"$JOB_OUTPUT/escape\\""]
attempts: 1
params: { type: object }
`,
    );
    redis = await startRedis();
    port = await freePort();
    worker = runCli(
      ['worker'],
      {
        TUNNEL_KEY_FILE: keygen(root, 'tunnel.key'),
        TUNNEL_LISTEN: `127.0.0.1:${await freePort()}`,
        API_LISTEN: `127.0.0.1:${port}`,
        DATA_FOLDER: data,
        EXPERIMENTS_DIR: path.join(root, 'experiments'),
        REDIS_URL: redis.url,
        GPU_DEVICES: 'none',
        WORKER_CONCURRENCY: '4',
        LOG_LEVEL: 'info',
        TMPDIR: path.join(root, 'tmp'),
        HOME: path.join(root, 'home'),
      },
      path.join(root, 'cwd'),
    );
    await worker.waitForLog('worker ready', 60_000);
    await waitForPort(port);
    // One real job with output, so traversal is tried against an id that exists.
    const r = await raw(
      port,
      request('POST', '/jobs', json, Buffer.from('{"experiment":"echo","params":{"a":1}}')),
    );
    expect(r.status).toBe(201);
    validId = (JSON.parse(r.body.toString()) as { id: string }).id;
    for (let i = 0; i < 200; i++) {
      const s = await raw(port, request('GET', `/jobs/${validId}`, []));
      if ((JSON.parse(s.body.toString()) as { state: string }).state === 'succeeded') break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const ok = await raw(port, request('GET', `/jobs/${validId}/files/nested/deep.txt`, []));
    expect([ok.status, ok.body.toString()]).toEqual([200, 'deep\n']);
    // Taken now: the token file the keygen wrote and the canary are in it; DATA_FOLDER is not.
    before = snapshot(root, data);
  });

  afterAll(async () => {
    await worker?.stop();
    redis?.stop();
    recordChaos('hostile-api', {
      scale: SCALE.name,
      requests: RUNS,
      statuses: Object.fromEntries(statuses),
    });
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('answers every generated request below 500, never with the canary, and never dies', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const reply = await raw(port, build(c, validId), c.kind === 'raw');
        statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
        // No answer at all is a failure, except to raw bytes that never formed a request.
        const noAnswer = reply.status === 0 && c.kind !== 'raw';
        expect({
          kind: c.kind,
          status: reply.status >= 500 || noAnswer ? reply.status : 'ok',
        }).toEqual({
          kind: c.kind,
          status: 'ok',
        });
        expect(reply.body.includes(SECRET)).toBe(false);
        expect(reply.body.includes('root:x:0:0')).toBe(false);
        // A header value never carries an injected line (CR/LF in names must not split headers).
        expect(reply.head).not.toMatch(/^X-Injected:/im);
      }),
      { numRuns: RUNS, endOnFailure: true },
    );
    expect(worker.child.exitCode).toBeNull();
  });

  it('is still serving afterwards, and nothing outside DATA_FOLDER was created or touched', async () => {
    const t = await raw(port, request('GET', '/test', []));
    expect([t.status, t.body.toString()]).toEqual([200, '{"response":"ok"}']);
    const after = snapshot(root, data);
    const changed = [...new Set([...before.keys(), ...after.keys()])].filter(
      (k) => before.get(k) !== after.get(k),
    );
    expect(changed).toEqual([]);
    const total = [...statuses.values()].reduce((a, b) => a + b, 0);
    expect(total).toBe(RUNS);
  });
});
