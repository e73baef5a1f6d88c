/* eslint-disable @typescript-eslint/no-explicit-any -- answers and the document are JSON */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { JobsClient, writeTestExperiments } from '../../libs/jobs/src/testing/client';
import { ROOT, runCli, type DaemonProcess } from '../support/daemon';
import { OpenApiChecker } from '../support/openapi';
import { eventData, hold, multipart, send, type Answer, type Call } from '../support/openapi-calls';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, workerEnvIn } from '../support/system';

jest.setTimeout(240_000);

/**
 * The OpenAPI document the built worker serves at /docs-json, held to what it says: `redocly
 * lint` with the recommended rules finds nothing in it, and every answer the worker gives
 * (each route, each status this file can provoke: 200, 201, 204, 206, 400, 403, 404, 413, 415,
 * 416, 421, 503, 507) is checked against it by a response validator (test/support/openapi.ts):
 * status declared, Content-Type declared, body matching its schema with no undescribed field,
 * required headers present. The last test asserts that every answer the document declares was
 * provoked and checked here, but the one that cannot happen. Swagger UI's try-it-out is run in
 * headless Chromium on the download route, whose `path` parameter may hold slashes.
 */

const FOREIGN_HOST = 'attacker.example';
/** A name the worker serves through API_HOSTS, mapped to 127.0.0.1 inside Chromium only. */
const DOCS_HOST = 'openapi.test';
const NO_JOB = '00000000-0000-4000-8000-000000000000';
const CHROMIUM = '/usr/bin/chromium';

/** Writes files in folders, an empty file and a non-ASCII name into its output. */
const NESTED_YAML = `name: nested
runner: process
command: ["sh", "-c", "mkdir -p $JOB_OUTPUT/sub/dir && printf 'deep file' > $JOB_OUTPUT/sub/dir/file.txt && : > $JOB_OUTPUT/empty.bin && printf 'Grüße' > $JOB_OUTPUT/データ.txt"]
params: { type: object }
`;

/** Runs until cancelled: a job whose streams stay open. */
const WAITS_YAML = `name: waits
runner: process
command: ["sh", "-c", "echo started; sleep 600"]
params: { type: object }
`;

describe('the OpenAPI document, held to the built worker', () => {
  let dir: string;
  let redis: TestRedis;
  let worker: DaemonProcess;
  let short: DaemonProcess;
  let port: number;
  let shortPort: number;
  let doc: any;
  let checker: OpenApiChecker;
  let jobs: JobsClient;
  const ids: Record<string, string> = {};

  /** Sends `c`, asserts the status it should provoke and checks the answer against the document. */
  async function call(status: number, c: Call): Promise<Answer> {
    const a = await send(c, c.port ?? port);
    const method = c.method ?? 'GET';
    const exchange = { method, route: c.route, status: a.status, headers: a.headers, body: a.body };
    const problems = checker.check(exchange);
    if (a.status >= 200 && a.status < 300 && c.query) {
      problems.push(...checker.checkQuery(method, c.route, c.query));
    }
    // What was asked and answered, to read when the status is not the one expected.
    const asked = `${method} ${c.route} ${JSON.stringify(c.params ?? {})} ${JSON.stringify(c.query ?? {})}`;
    const what = `${asked}: ${a.text.slice(0, 300)}`;
    expect({ what, status: a.status, problems }).toEqual({ what, status, problems: [] });
    return a;
  }

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'gsc-openapi-'));
    redis = await startRedis();
    const experiments = path.join(dir, 'experiments');
    mkdirSync(experiments);
    writeTestExperiments(experiments);
    writeFileSync(path.join(experiments, 'nested.yaml'), NESTED_YAML);
    writeFileSync(path.join(experiments, 'waits.yaml'), WAITS_YAML);
    const key = keygen(dir);
    const main = await workerEnvIn(dir, key, {
      folders: { data: path.join(dir, 'data'), experiments },
      name: 'openapi-main',
      redisUrl: `${redis.url}/0`,
      extra: { API_HOSTS: DOCS_HOST },
    });
    // A second worker whose disk is always short of MIN_FREE_DISK (507, /health 503), on its
    // own Redis database so that it never takes the first one's jobs.
    const shortOfDisk = await workerEnvIn(dir, key, {
      folders: { data: path.join(dir, 'data-short'), experiments },
      name: 'openapi-short',
      redisUrl: `${redis.url}/1`,
      extra: { MIN_FREE_DISK: '99.99%' },
    });
    port = main.api;
    shortPort = shortOfDisk.api;
    worker = runCli(['worker'], main.env);
    short = runCli(['worker'], shortOfDisk.env);
    await Promise.all([
      worker.waitForLog('worker ready', 60_000),
      short.waitForLog('worker ready', 60_000),
    ]);
    jobs = new JobsClient(`http://127.0.0.1:${port}`);
    doc = JSON.parse((await send({ route: '/docs-json' }, port)).text);
    checker = new OpenApiChecker(doc);
    ids.hello = await jobs.submit('hello', { name: 'Ada' });
    ids.nested = await jobs.submit('nested');
    ids.waits = await jobs.submit('waits');
    await Promise.all([
      jobs.waitFor(ids.hello, ['succeeded']),
      jobs.waitFor(ids.nested, ['succeeded']),
      jobs.waitFor(ids.waits, ['running']),
    ]);
  });

  afterAll(async () => {
    // Redis is down by then: no graceful stop to wait for.
    await Promise.all([worker?.stop('SIGKILL'), short?.stop('SIGKILL')]);
    redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('passes `redocly lint` with the recommended rules, run offline, no telemetry', () => {
    const file = path.join(dir, 'openapi.json');
    writeFileSync(file, JSON.stringify(doc));
    const lint = spawnSync(
      path.join(ROOT, 'node_modules', '.bin', 'redocly'),
      ['lint', file, '--config', path.join(ROOT, 'redocly.yaml'), '--format', 'json'],
      {
        encoding: 'utf8',
        // A HOME of its own: the CLI keeps its update-check files there. CI and the two
        // variables keep it from sending usage data or asking npm for a newer version.
        env: {
          PATH: process.env.PATH,
          HOME: dir,
          CI: 'true',
          REDOCLY_TELEMETRY: 'off',
          REDOCLY_SUPPRESS_NOTIFICATIONS: 'true',
        },
        timeout: 60_000,
      },
    );
    const report = JSON.parse(lint.stdout) as {
      totals: { errors: number; warnings: number };
      problems: { ruleId: string; message: string; location: { pointer: string }[] }[];
    };
    const found = report.problems.map(
      (p) => `${p.ruleId}: ${p.message} (${p.location[0]?.pointer})`,
    );
    expect(found).toEqual([]);
    expect(report.totals).toMatchObject({ errors: 0, warnings: 0 });
    expect(lint.status).toBe(0);
    // What the lint does not ask for: named schemas, and the download's `path` declared.
    expect(Object.keys(doc.components.schemas)).toEqual(
      expect.arrayContaining(['Job', 'JobSubmitted', 'Experiment', 'HttpError', 'OutputFiles']),
    );
    const download = doc.paths['/jobs/{id}/files/{path}'].get;
    expect(download.parameters.map((p: any) => `${p.in}:${p.name}`)).toEqual(
      expect.arrayContaining(['path:id', 'path:path']),
    );
  });

  it('answers health, metrics, /test and /experiments as described', async () => {
    await call(200, { route: '/test' });
    await call(200, { route: '/health' });
    await call(200, { route: '/health/live' });
    await call(200, { route: '/health/ready' });
    const metrics = await call(200, { route: '/metrics' });
    expect(metrics.text).toContain('redis_up');
    const exps = await call(200, { route: '/experiments' });
    expect(exps.json.map((e: any) => e.name)).toContain('nested');
  });

  it('answers submissions, JSON and multipart, and each refusal as described', async () => {
    const json = { 'content-type': 'application/json' };
    const submit = (status: number, body: unknown, headers: Record<string, string> = json) =>
      call(status, {
        method: 'POST',
        route: '/jobs',
        headers,
        body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
      });
    const first = await submit(201, {
      experiment: 'quick',
      params: {},
      priority: 5,
      key: 'openapi-once',
    });
    const again = await submit(200, { experiment: 'quick', key: 'openapi-once' });
    expect(again.json.id).toBe(first.json.id);
    await submit(400, '', json);
    await submit(400, '{bad', json);
    await submit(400, [1]);
    await submit(400, { experiment: 'hello', params: {} });
    await submit(400, { experiment: 'quick', priority: 0 });
    await submit(400, { experiment: 'gpu-probe' }); // no GPU on this worker
    await submit(403, { experiment: 'quick' }, { ...json, origin: `http://${FOREIGN_HOST}` });
    await submit(404, { experiment: 'nope' });
    const huge = await submit(413, { experiment: 'quick', params: { a: 'x'.repeat(200_000) } });
    expect(huge.json.error).toBeUndefined(); // Nest's JSON body parser says no more
    await submit(415, 'experiment=quick', { 'content-type': 'application/x-www-form-urlencoded' });

    const form = await multipart((fd) => {
      fd.append('experiment', 'copy-input');
      fd.append('params', '{}');
      fd.append('files', new Blob(['input bytes']), 'in.txt');
    });
    await submit(201, form.body, { 'content-type': form.type });
    const fileFirst = await multipart((fd) => {
      fd.append('files', new Blob(['x']), 'in.txt');
      fd.append('experiment', 'copy-input');
    });
    await submit(400, fileFirst.body, { 'content-type': fileFirst.type });
    const bigField = await multipart((fd) => {
      fd.append('experiment', 'copy-input');
      fd.append('params', JSON.stringify({ a: 'x'.repeat(110 * 1024) }));
    });
    await submit(413, bigField.body, { 'content-type': bigField.type });
  });

  it('answers the list, one record and a cancel, and their refusals, as described', async () => {
    await call(200, { route: '/jobs' });
    const some = await call(200, {
      route: '/jobs',
      query: { experiment: 'hello', state: 'succeeded', limit: '5' },
    });
    expect(some.json.map((j: any) => j.id)).toContain(ids.hello);
    await call(400, { route: '/jobs', query: { limit: 'abc' } });
    await call(400, { route: '/jobs', query: { limit: '0' } });
    await call(400, { route: '/jobs', query: { state: 'nope' } });
    await call(200, { route: '/jobs/{id}', params: { id: ids.hello } });
    await call(400, { route: '/jobs/{id}', params: { id: 'abc' } });
    await call(404, { route: '/jobs/{id}', params: { id: NO_JOB } });
    const del = { method: 'DELETE', route: '/jobs/{id}' };
    await call(403, { ...del, params: { id: ids.hello }, headers: { origin: 'null' } });
    await call(400, { ...del, params: { id: 'abc' } });
    await call(404, { ...del, params: { id: NO_JOB } });
    const ended = await call(200, { ...del, params: { id: ids.hello } });
    expect(ended.json.state).toBe('succeeded'); // an ended job is left as it was
  });

  it('answers logs, events, file lists and downloads, with ranges, as described', async () => {
    const hello = { id: ids.hello };
    const log = await call(200, { route: '/jobs/{id}/logs', params: hello });
    expect(log.text).toContain('::progress:: 99 step 3');
    await call(200, { route: '/jobs/{id}/logs', params: hello, query: { follow: 'true' } });
    await call(400, { route: '/jobs/{id}/logs', params: { id: 'abc' } });
    await call(404, { route: '/jobs/{id}/logs', params: { id: NO_JOB } });

    const events = await call(200, { route: '/jobs/{id}/events', params: hello });
    const ended = eventData(events.text);
    expect(ended).toHaveLength(1);
    for (const data of ended) expect(checker.validateComponent('Job', data)).toEqual([]);
    await call(204, {
      route: '/jobs/{id}/events',
      params: hello,
      headers: { 'last-event-id': 'succeeded' },
    });
    const live = await call(200, {
      route: '/jobs/{id}/events',
      params: { id: ids.waits },
      until: (t) => t.includes('\n\n'),
    });
    const running = eventData(live.text);
    expect(running).toEqual([expect.objectContaining({ state: 'running' })]);
    expect(checker.validateComponent('Job', running[0])).toEqual([]);
    await call(400, { route: '/jobs/{id}/events', params: { id: 'abc' } });
    await call(404, { route: '/jobs/{id}/events', params: { id: NO_JOB } });

    const list = await call(200, { route: '/jobs/{id}/files', params: { id: ids.nested } });
    expect(list.json.files.map((f: any) => f.path)).toEqual([
      'empty.bin',
      'sub/dir/file.txt',
      'データ.txt',
    ]);
    await call(400, { route: '/jobs/{id}/files', params: { id: 'abc' } });
    await call(404, { route: '/jobs/{id}/files', params: { id: NO_JOB } });

    const file = '/jobs/{id}/files/{path}';
    const whole = await call(200, { route: file, params: { id: ids.hello, path: 'hello.txt' } });
    expect(whole.text).toContain('Hello');
    await call(200, { method: 'HEAD', route: file, params: { id: ids.hello, path: 'hello.txt' } });
    const part = await call(206, {
      route: file,
      params: { id: ids.hello, path: 'hello.txt' },
      headers: { range: 'bytes=0-3' },
    });
    expect(part.text).toBe('Hell');
    await call(416, {
      route: file,
      params: { id: ids.hello, path: 'hello.txt' },
      headers: { range: 'bytes=1000-' },
    });
    await call(416, {
      route: file,
      params: { id: ids.nested, path: 'empty.bin' },
      headers: { range: 'bytes=0-' },
    });
    await call(200, { route: file, params: { id: ids.nested, path: 'empty.bin' } });
    const named = await call(200, { route: file, params: { id: ids.nested, path: 'データ.txt' } });
    expect(named.headers['content-disposition']).toContain(
      `filename*=UTF-8''${encodeURIComponent('データ.txt')}`,
    );
    // A file in a folder: slashes as they are (curl, the CLI) or encoded (Swagger UI).
    const deep = { id: ids.nested, path: 'sub/dir/file.txt' };
    expect((await call(200, { route: file, params: deep, raw: true })).text).toBe('deep file');
    expect((await call(200, { route: file, params: deep })).text).toBe('deep file');
    await call(400, { route: file, params: { id: ids.hello, path: 'passwd' } }); // a link
    await call(400, { route: file, params: { id: 'abc', path: 'hello.txt' } });
    await call(404, { route: file, params: { id: ids.hello, path: 'nope.txt' } });
    await call(404, { route: file, params: { id: NO_JOB, path: 'hello.txt' } });
  });

  it('answers 503 with Retry-After over the stream caps, as described', async () => {
    const held: { close(): void }[] = [];
    try {
      for (const [route, query] of [
        ['/jobs/{id}/events', ''],
        ['/jobs/{id}/logs', '?follow=true'],
      ]) {
        const target = `${route.replace('{id}', ids.waits)}${query}`;
        const opened = await Promise.all(Array.from({ length: 32 }, () => hold(port, target)));
        held.push(...opened);
        expect(opened.map((o) => o.status)).toEqual(Array(32).fill(200));
        const refused = await call(503, {
          route,
          params: { id: ids.waits },
          query: query ? { follow: 'true' } : undefined,
        });
        expect(refused.headers['retry-after']).toBe('5');
        expect(refused.json).toMatchObject({ max: 32 });
      }
    } finally {
      for (const h of held) h.close();
    }
    // Then a cancel of the running job, which answers while it stops.
    const cancel = await call(200, {
      method: 'DELETE',
      route: '/jobs/{id}',
      params: { id: ids.waits },
    });
    expect(['running', 'cancelled']).toContain(cancel.json.state);
  });

  it('answers 507 and a down /health on a worker short of disk, as described', async () => {
    const onShort = { port: shortPort };
    await call(507, {
      ...onShort,
      method: 'POST',
      route: '/jobs',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ experiment: 'quick' }),
    });
    const form = await multipart((fd) => {
      fd.append('experiment', 'copy-input');
      fd.append('files', new Blob(['x']), 'in.txt');
    });
    await call(507, {
      ...onShort,
      method: 'POST',
      route: '/jobs',
      headers: { 'content-type': form.type },
      body: form.body,
    });
    const health = await call(503, { ...onShort, route: '/health' });
    expect(health.json.status).toBe('down');
    await call(503, { ...onShort, route: '/health/ready' });
  });

  it('answers 421 on every operation to a Host that is not one of its names', async () => {
    let operations = 0;
    for (const [route, item] of Object.entries<any>(doc.paths)) {
      for (const method of Object.keys(item)) {
        const r = await call(421, {
          method: method.toUpperCase(),
          route,
          params: { id: NO_JOB, path: 'x' },
          headers: { host: FOREIGN_HOST },
        });
        expect(r.json.message).toContain('API_HOSTS');
        operations++;
      }
    }
    expect(operations).toBe(14);
  });

  it("runs Swagger UI's try-it-out on a download with slashes in its path, loading nothing from elsewhere", async () => {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        `--host-resolver-rules=MAP ${DOCS_HOST} 127.0.0.1`,
      ],
    });
    try {
      const page = await browser.newPage();
      const origin = `http://${DOCS_HOST}:${port}`;
      const requested: string[] = [];
      page.on('request', (r) => requested.push(r.url()));
      // By a name that is not loopback, as a front host's users reach it: the page still loads
      // nothing from elsewhere (no font, no script, no online validator).
      await page.goto(`${origin}/docs`);
      const op = page.locator('#operations-jobs-JobOutputController_download');
      await op.locator('.opblock-summary').first().click();
      await op.getByRole('button', { name: 'Try it out' }).click();
      await op.locator('tr[data-param-name="id"] input').fill(ids.nested);
      await op.locator('tr[data-param-name="path"] input').fill('sub/dir/file.txt');
      const [answer] = await Promise.all([
        page.waitForResponse((r) => r.url().includes('/files/')),
        op.getByRole('button', { name: 'Execute' }).click(),
      ]);
      expect(answer.url()).toBe(`${origin}/jobs/${ids.nested}/files/sub%2Fdir%2Ffile.txt`);
      expect(answer.status()).toBe(200);
      // Swagger UI takes the bytes as a download link: the headers say they were the file's.
      expect(await answer.allHeaders()).toMatchObject({
        'content-length': String('deep file'.length),
        'content-disposition': 'attachment; filename="file.txt"',
      });
      await expect(
        op.locator('.live-responses-table tbody .response-col_status').first().textContent(),
      ).resolves.toContain('200');
      const outside = requested.filter(
        (u) => !u.startsWith(`${origin}/`) && !u.startsWith('data:'),
      );
      expect(outside).toEqual([]);
    } finally {
      await browser.close();
    }
  });

  it('answers 503 on every job route while Redis is down, as described', async () => {
    redis.kill();
    const id = { id: ids.hello };
    await Promise.all([
      call(503, { route: '/jobs' }),
      call(503, { route: '/jobs/{id}', params: id }),
      call(503, { method: 'DELETE', route: '/jobs/{id}', params: id }),
      call(503, { route: '/jobs/{id}/logs', params: id }),
      call(503, { route: '/jobs/{id}/events', params: id }),
      call(503, { route: '/jobs/{id}/files', params: id }),
      call(503, { route: '/jobs/{id}/files/{path}', params: { ...id, path: 'hello.txt' } }),
      call(503, {
        method: 'POST',
        route: '/jobs',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ experiment: 'quick' }),
      }),
    ]);
    await call(200, { route: '/experiments' }); // needs no Redis
  });

  it('provoked and checked every answer the document declares', () => {
    const unchecked = checker.declared().filter((k) => !checker.seen.has(k));
    // Terminus declares 503 on every health check; liveness's one check (the process answers)
    // cannot fail, so nothing here can provoke it.
    expect(unchecked).toEqual(['GET /health/live 503']);
  });
});
