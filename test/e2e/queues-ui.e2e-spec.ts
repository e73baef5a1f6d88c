import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { JobsClient, writeTestExperiments } from '../../libs/jobs/src/testing/client';
import { ROOT } from '../support/daemon';
import { startPair, waitUntil, type Pair } from '../support/system';

jest.setTimeout(180_000);

/**
 * The bull-board page at /queues, opened in headless Chromium through the relay (as a person on
 * the front host would), and QUEUE_UI's three modes: readonly refuses every change on the server,
 * off serves nothing, admin allows clean and retry.
 */
const RESULTS = path.join(ROOT, '.local', 'test-results');
const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--no-first-run',
];

async function put(url: string): Promise<number> {
  return (await fetch(url, { method: 'PUT' })).status;
}

describe('bull-board at /queues', () => {
  let pair: Pair;
  let browser: Browser;

  beforeAll(async () => {
    pair = await startPair();
    writeTestExperiments(path.join(pair.dir, 'experiments'));
    await pair.worker.stop();
    await pair.restartWorker(); // now with the test experiments
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  });

  afterAll(async () => {
    await browser?.close();
    await pair?.stop();
  });

  it('shows the queues in headless Chromium through the tunnel, and saves a screenshot', async () => {
    const jobs = new JobsClient(`http://127.0.0.1:${pair.ports.api}`);
    await jobs.waitFor(await jobs.submit('quick'), ['succeeded']);
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    // Every request the page makes (fonts, scripts, styles, API calls), and any it was refused.
    const requested: string[] = [];
    page.on('request', (r) => requested.push(r.url()));
    const res = await page.goto(`http://127.0.0.1:${pair.ports.relay}/queues`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toContain("default-src 'self'");
    await page.getByText('gsc-cpu').first().waitFor({ timeout: 30_000 });
    await page.getByText('gsc-gpu').first().waitFor({ timeout: 30_000 });
    const body = await page.textContent('body');
    expect(body).toContain('gsc-cpu');
    expect(body).toContain('gpu-sidecar (read-only)');
    // Nothing leaves the worker: no font or script from the internet.
    const outside = requested.filter(
      (u) => !u.startsWith(`http://127.0.0.1:${pair.ports.relay}/`) && !u.startsWith('data:'),
    );
    expect(outside).toEqual([]);
    expect(requested.length).toBeGreaterThan(3);
    mkdirSync(RESULTS, { recursive: true });
    const file = path.join(RESULTS, 'queues.png');
    await page.screenshot({ path: file, fullPage: true });
    expect(statSync(file).size).toBeGreaterThan(10_000);
    await page.close();
  });

  it('names each job after its experiment, and lists a cancelled one under Failed, not Completed', async () => {
    const jobs = new JobsClient(`http://127.0.0.1:${pair.ports.api}`);
    const id = await jobs.submit('once');
    await jobs.waitFor(id, ['running']);
    await fetch(`http://127.0.0.1:${pair.ports.api}/jobs/${id}`, { method: 'DELETE' });
    await jobs.waitFor(id, ['cancelled']);
    const base = `http://127.0.0.1:${pair.ports.api}/queues/api/queues`;
    type Listing = {
      queues: {
        name: string;
        counts: Record<string, number>;
        jobs: { id: string; name: string; failedReason?: string }[];
      }[];
    };
    const listed = async (status: string) =>
      (
        (await (await fetch(`${base}?activeQueue=gsc-cpu&status=${status}`)).json()) as Listing
      ).queues.find((q) => q.name === 'gsc-cpu')!;
    const failed = await waitUntil('the cancelled job under failed', async () => {
      const q = await listed('failed');
      return q.jobs.find((j) => j.id === id);
    });
    expect(failed).toMatchObject({ name: 'once', failedReason: 'cancelled' });
    const completed = await listed('completed');
    expect(completed.jobs.map((j) => j.id)).not.toContain(id);
    expect(completed.jobs.map((j) => j.name)).toEqual(['quick']);
  });

  it('readonly (the default) refuses every change on the server with 405', async () => {
    const base = `http://127.0.0.1:${pair.ports.api}/queues/api/queues`;
    expect(await put(`${base}/gsc-cpu/clean/completed`)).toBe(405);
    expect(await put(`${base}/gsc-cpu/retry/failed`)).toBe(405);
    expect(await put(`${base}/gsc-cpu/pause`)).toBe(405);
    expect(await put(`${base}/gsc-cpu/empty`)).toBe(405);
    expect(await put(`${base}/gsc-cpu/obliterate`)).toBe(405);
    const add = await fetch(`${base}/gsc-cpu/add`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'run', data: { id: 'x', experiment: 'quick' } }),
    });
    expect(add.status).toBe(405);
    // The completed job is still there: nothing was cleaned.
    const list = (await (await fetch(`${base}?activeQueue=gsc-cpu&status=completed`)).json()) as {
      queues: { name: string; counts: Record<string, number> }[];
    };
    expect(list.queues.find((q) => q.name === 'gsc-cpu')?.counts.completed).toBe(1);
  });

  it('QUEUE_UI=off serves no page; admin allows cleaning', async () => {
    await pair.worker.stop();
    pair.workerEnv.QUEUE_UI = 'off';
    await pair.restartWorker();
    expect((await fetch(`http://127.0.0.1:${pair.ports.api}/queues`)).status).toBe(404);
    await pair.worker.stop();
    pair.workerEnv.QUEUE_UI = 'admin';
    await pair.restartWorker();
    const base = `http://127.0.0.1:${pair.ports.api}/queues/api/queues`;
    // bull-board cleans with a 5 s grace: a job completed less than 5 s ago stays until then.
    const completed = async (): Promise<number | undefined> => {
      const list = (await (await fetch(`${base}?activeQueue=gsc-cpu&status=completed`)).json()) as {
        queues: { name: string; counts: Record<string, number> }[];
      };
      return list.queues.find((q) => q.name === 'gsc-cpu')?.counts.completed;
    };
    expect(await completed()).toBe(1);
    const deadline = Date.now() + 20_000;
    do {
      expect(await put(`${base}/gsc-cpu/clean/completed`)).toBe(200);
      if ((await completed()) === 0) break;
      await new Promise((r) => setTimeout(r, 500));
    } while (Date.now() < deadline);
    expect(await completed()).toBe(0);
  });
});
