import { createHash } from 'node:crypto';
import { copyFileSync, createReadStream, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPair, type Pair } from '../support/system';

jest.setTimeout(180_000);

const ROOT = path.join(__dirname, '..', '..');
const BIG = `name: big
runner: process
command: ["sh", "-c", "head -c 1073741824 /dev/urandom > \\"$JOB_OUTPUT/big.bin\\""]
gpus: 0
timeout: 5m
attempts: 1
params: { type: object }
`;

async function json(
  url: string,
  init?: RequestInit,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, init);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function waitFor(
  base: string,
  id: string,
  states: string[],
): Promise<Record<string, unknown>> {
  for (;;) {
    const { body } = await json(`${base}/jobs/${id}`);
    if (states.includes(body.state as string)) return body;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** sha256 and length of an HTTP download, read as a stream (1 GiB never sits in memory). */
function downloadDigest(url: string): Promise<{ sha256: string; bytes: number; status: number }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      const h = createHash('sha256');
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        h.update(c);
      });
      res.on('end', () => resolve({ sha256: h.digest('hex'), bytes, status: res.statusCode ?? 0 }));
      res.on('error', reject);
    }).on('error', reject);
  });
}

function fileDigest(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (c) => h.update(c))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

describe('jobs through the relay and the tunnel', () => {
  let pair: Pair;
  let base: string;
  beforeAll(async () => {
    const experiments = mkdtempSync(path.join(tmpdir(), 'gsc-exp-'));
    mkdirSync(experiments, { recursive: true });
    copyFileSync(
      path.join(ROOT, 'examples', 'experiments', 'hello.yaml'),
      path.join(experiments, 'hello.yaml'),
    );
    writeFileSync(path.join(experiments, 'big.yaml'), BIG);
    pair = await startPair({ worker: { EXPERIMENTS_DIR: experiments } });
    base = `http://127.0.0.1:${pair.ports.relay}`;
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it('submits the sample experiment, watches it succeed and downloads its result, as the README shows', async () => {
    const submitted = await json(`${base}/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ experiment: 'hello', params: { name: 'Ada' } }),
    });
    expect(submitted.status).toBe(201);
    const id = submitted.body.id as string;
    const done = await waitFor(base, id, ['succeeded', 'failed']);
    expect(done.state).toBe('succeeded');
    expect(done.progress).toBe(100);
    const file = await fetch(`${base}/jobs/${id}/files/hello.txt`);
    expect(await file.text()).toBe('Hello, Ada!\n');
  });

  it('carries 1 GiB through one stream with a matching checksum', async () => {
    const { body } = await json(`${base}/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ experiment: 'big', params: {} }),
    });
    const id = body.id as string;
    expect((await waitFor(base, id, ['succeeded', 'failed'])).state).toBe('succeeded');
    const onDisk = path.join(pair.workerEnv.DATA_FOLDER, 'jobs', 'big', id, 'output', 'big.bin');
    const [got, want] = await Promise.all([
      downloadDigest(`${base}/jobs/${id}/files/big.bin`),
      fileDigest(onDisk),
    ]);
    expect(got.status).toBe(200);
    expect(got.bytes).toBe(1024 * 1024 * 1024);
    expect(got.sha256).toBe(want);
  });
});
