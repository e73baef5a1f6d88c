import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JobsClient, testExperiments } from '../../libs/jobs/src/testing/client';
import { startPair, waitUntil, type Pair } from '../support/system';
import { legitimateClient } from './http-clients';
import { ATTACK_SCALE, recordAttack, timed } from './support';

jest.setTimeout(ATTACK_SCALE.full ? 900_000 : 180_000);

/**
 * A job that writes a great many files to output/ (100 folders of them, and a chain of 40
 * nested folders with a file at its bottom), then GET /jobs/:id/files asked again and again
 * through the relay. The listing must stay within its bounds (README, "Job API": at most 10,000
 * files, `truncated` saying so) and answer quickly, and the worker's /test must answer
 * meanwhile, straight to API_LISTEN and through the relay.
 */
const SCALE = ATTACK_SCALE.full ? { files: 200_000, lists: 40 } : { files: 20_000, lists: 8 };
/** An answer slower than this counts as got through (the listing is bounded at 5 s of walking). */
const SLOW_MS = 8_000;
const MAX_LISTED = 10_000;

const MANY_JS = `const fs = require('node:fs'), path = require('node:path');
const out = process.env.JOB_OUTPUT, n = Number(process.env.FILES);
for (let d = 0; d < 100; d++) fs.mkdirSync(path.join(out, 'd' + d));
for (let i = 0; i < n; i++) fs.writeFileSync(path.join(out, 'd' + (i % 100), 'f' + i), 'x');
let deep = out;
for (let i = 0; i < 40; i++) fs.mkdirSync((deep = path.join(deep, 'n' + i)));
fs.writeFileSync(path.join(deep, 'bottom.txt'), 'x');
fs.writeFileSync(path.join(out, 'done'), 'x');
setInterval(() => {}, 1000);
`;

function experiments(dir: string): string {
  const exp = path.join(dir, 'experiments-listing');
  mkdirSync(exp);
  const t = testExperiments();
  writeFileSync(path.join(exp, 'hello.yaml'), t['hello.yaml']);
  writeFileSync(path.join(exp, 'quick.yaml'), t['quick.yaml']);
  writeFileSync(path.join(exp, 'many.js'), MANY_JS);
  writeFileSync(
    path.join(exp, 'many.yaml'),
    `name: many\nrunner: process\ncommand: ["${process.execPath}", "${path.join(exp, 'many.js')}"]\n` +
      `attempts: 1\ntimeout: 30m\nenv: { FILES: "${SCALE.files}" }\nparams: { type: object }\n`,
  );
  return exp;
}

describe('a job output of many files, listed through the built relay and worker', () => {
  let pair: Pair;
  let base: string;
  let api: JobsClient;
  let other = '';
  let many = '';

  beforeAll(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'gsc-attack-listing-'));
    pair = await startPair({ worker: { EXPERIMENTS_DIR: experiments(dir) } });
    base = `http://127.0.0.1:${pair.ports.relay}`;
    api = new JobsClient(base);
    other = await api.submit('hello', { name: 'Ada' });
    await api.waitFor(other, ['succeeded']);
    many = await api.submit('many');
    await api.waitFor(many, ['running']);
    const out = path.join(pair.workerEnv.DATA_FOLDER, 'jobs', 'many', many, 'output');
    await waitUntil(
      'the job wrote its files',
      () => existsSync(path.join(out, 'done')),
      ATTACK_SCALE.full ? 600_000 : 120_000,
    );
  });

  afterAll(async () => {
    await pair?.stop({ killAfterMs: 30_000 });
  });

  it(`GET /jobs/:id/files of ${SCALE.files} files: bounded, marked truncated, /test answers meanwhile`, async () => {
    const legit = legitimateClient(base, other);
    // The worker's own /test, straight to API_LISTEN, every 50 ms.
    const direct: number[] = [];
    let directFailed = 0;
    let probing = true;
    const probe = (async () => {
      while (probing) {
        const t = await timed(async () => {
          const r = await fetch(`http://127.0.0.1:${pair.ports.api}/test`, {
            signal: AbortSignal.timeout(5_000),
          });
          return r.status === 200 && (await r.text()).includes('"ok"');
        });
        direct.push(t.ms);
        if (!t.ok) directFailed++;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const seen = { listed: [] as number[], ms: [] as number[], bytes: [] as number[], why: '' };
    let through = 0;
    for (let i = 0; i < SCALE.lists; i++) {
      const t0 = performance.now();
      let ok = false;
      try {
        const r = await fetch(`${base}/jobs/${many}/files`, {
          signal: AbortSignal.timeout(60_000),
        });
        const text = await r.text();
        const body = JSON.parse(text) as {
          files: { path: string }[];
          truncated?: boolean;
          truncatedBecause?: string;
        };
        const ms = performance.now() - t0;
        seen.listed.push(body.files.length);
        seen.ms.push(Math.round(ms));
        seen.bytes.push(text.length);
        seen.why = body.truncatedBecause ?? '';
        ok =
          r.status === 200 &&
          body.files.length <= MAX_LISTED &&
          body.truncated === true &&
          ms < SLOW_MS;
      } catch {
        seen.ms.push(Math.round(performance.now() - t0));
      }
      if (!ok) through++;
    }
    probing = false;
    await probe;
    const sorted = [...direct].sort((a, b) => a - b);
    const figures = {
      attack: `GET /jobs/:id/files of a job that wrote ${SCALE.files} files (100 folders, and 40 nested)`,
      times: SCALE.lists,
      gotThrough: through,
      counted: `listings over ${MAX_LISTED} entries, not marked truncated, or slower than ${SLOW_MS / 1000} s`,
      legit: await legit.stop(),
      extra: {
        listedMax: Math.max(...seen.listed),
        listingMsP50: [...seen.ms].sort((a, b) => a - b)[Math.floor(seen.ms.length / 2)],
        listingMsMax: Math.max(...seen.ms),
        bytesMax: Math.max(...seen.bytes),
        truncatedBecause: seen.why,
        directTest: {
          tried: direct.length,
          failed: directFailed,
          p50Ms: Math.round(sorted[Math.floor(sorted.length / 2)] ?? 0),
          maxMs: Math.round(sorted.at(-1) ?? 0),
        },
      },
    };
    recordAttack('job-output-many-files', figures);
    expect(figures.gotThrough).toBe(0);
    expect(directFailed).toBe(0);
    expect(figures.legit.ok).toBe(figures.legit.tried);
  });
});
