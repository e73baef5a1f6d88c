import { existsSync } from 'node:fs';
import path from 'node:path';
import { waitUntil } from '../support/system';
import { legitimateClient, nodeScriptExperiment, startJobHost, type JobHost } from './job-host';
import { ATTACK_SCALE, recordAttack } from './support';

/**
 * Hostile output/ trees against the built worker: what a job leaves there is listed
 * (GET /jobs/:id/files) by whoever asks, and fsynced when the job succeeds.
 * - The listing's 10,000-file bound bounds entries, not bytes: 14 nested folders of 255-byte
 *   names of \x01 (each \u0001 in JSON) and 10,000 hard links of 255-byte names made a 178 MB
 *   answer. While the listings are asked for, /test must answer.
 * - The fsync of output/ at the end of a job that succeeded opened and fsynced every file, with
 *   no bound: a million hard links held the job (its GPUs, its queue slot, the worker's
 *   shutdown) for 432 s. It is now bounded (OUTPUT_SYNC: 100,000 names, 10 s).
 */
const FULL = ATTACK_SCALE.full;
const LINKS = 10_000;
/** The most an answer may weigh (1 MB of paths, plus sizes and the JSON around them). */
const MAX_ANSWER = 2_000_000;
/** An answer slower than this counts as got through. */
const SLOW_MS = 3_000;

/** Hard links the second job leaves in output/ (0.5 ms each to fsync here). */
const SYNC_LINKS = FULL ? 1_000_000 : 60_000;
/** The most time from the job's last write to `succeeded` (the bound is 10 s). */
const SYNC_MS = 15_000;

jest.setTimeout(FULL ? 600_000 : 180_000);

const LINKS_JS = `const fs = require('node:fs');
process.chdir(process.env.JOB_OUTPUT);
let base = '';
for (let i = 0; i < ${SYNC_LINKS}; i++) {
  if (i % 60000 === 0) fs.writeFileSync((base = 'base' + i), 'x');
  fs.linkSync(base, i.toString(36).padStart(8, '0'));
}
fs.writeFileSync('done', 'x');
`;

const BIG_NAMES_JS = `const fs = require('node:fs');
process.chdir(process.env.JOB_OUTPUT);
for (let i = 0; i < 14; i++) { const n = String.fromCharCode(1 + i).repeat(255); fs.mkdirSync(n); process.chdir(n); }
fs.writeFileSync('x', 'y');
for (let i = 0; i < ${LINKS}; i++) fs.linkSync('x', i.toString(36).padStart(4, '0') + '\\x01'.repeat(251));
`;

describe('hostile output/ trees', () => {
  let h: JobHost;

  beforeAll(async () => {
    h = await startJobHost(
      (dir) => ({
        'links.yaml': nodeScriptExperiment('links', dir, '30m'),
        'bignames.yaml': nodeScriptExperiment('bignames', dir, '5m'),
      }),
      {},
      { 'bignames.js': BIG_NAMES_JS, 'links.js': LINKS_JS },
    );
  });
  afterAll(() => h?.stop());

  it(`GET /jobs/:id/files of ${LINKS} files with 3.8 KB paths of \\x01: at most 1 MB of paths, /test answers`, async () => {
    const id = await h.api.submit('bignames');
    await h.api.waitFor(id, ['succeeded'], 120_000);
    const legit = legitimateClient(h.api);
    const lists = FULL ? 20 : 4;
    const seen = { bytes: [] as number[], ms: [] as number[], listed: 0, why: '' };
    let through = 0;
    for (let i = 0; i < lists; i++) {
      const t0 = performance.now();
      const r = await h.api.call('GET', `/jobs/${id}/files`);
      const ms = performance.now() - t0;
      const text = JSON.stringify(r.body);
      const body = r.body as { files: unknown[]; truncated: boolean; truncatedBecause?: string };
      seen.bytes.push(text.length);
      seen.ms.push(Math.round(ms));
      seen.listed = body.files?.length ?? 0;
      seen.why = body.truncatedBecause ?? '';
      if (r.status !== 200 || text.length > MAX_ANSWER || !body.truncated || ms > SLOW_MS)
        through++;
    }
    const figures = await legit.stop();
    recordAttack('job-output-long-paths', {
      attack: `GET /jobs/:id/files of a job that wrote ${LINKS} hard links of 255-byte names under 14 folders of 255-byte names of \\x01`,
      times: lists,
      gotThrough: through + (figures.ok === figures.tried ? 0 : 1),
      counted: `answers over ${MAX_ANSWER / 1e6} MB, not marked truncated, or slower than ${SLOW_MS / 1000} s; a failed /test`,
      legit: figures,
      extra: {
        answerBytesMax: Math.max(...seen.bytes),
        listingMs: seen.ms,
        listed: seen.listed,
        truncatedBecause: seen.why,
      },
    });
    expect(through).toBe(0);
    expect(figures.ok).toBe(figures.tried);
  });

  it(`a job that leaves ${SYNC_LINKS} hard links in output/ succeeds within the fsync's bound`, async () => {
    const legit = legitimateClient(h.api);
    const id = await h.api.submit('links');
    const done = path.join(h.jobDir('links', id), 'output', 'done');
    await waitUntil('the job wrote its links', () => existsSync(done), FULL ? 600_000 : 120_000);
    const t0 = performance.now();
    const rec = await h.api.waitFor(id, ['succeeded', 'failed'], FULL ? 900_000 : 120_000);
    const endMs = performance.now() - t0;
    const figures = await legit.stop();
    const warned = h.daemon
      .stderr()
      .split('\n')
      .concat(h.daemon.stdout().split('\n'))
      .find((l) => l.includes(id) && l.includes('writeback'));
    recordAttack('jobs-output-sync-links', {
      attack: `a job leaves ${SYNC_LINKS} hard links in output/ and succeeds`,
      times: 1,
      gotThrough: (rec.state === 'succeeded' ? 0 : 1) + (endMs < SYNC_MS ? 0 : 1),
      counted: `a job not succeeded, or more than ${SYNC_MS / 1000} s from its last write to succeeded`,
      legit: figures,
      extra: { endMs: Math.round(endMs), state: rec.state, logged: warned?.slice(0, 300) },
    });
    expect(rec.state).toBe('succeeded');
    expect(endMs).toBeLessThan(SYNC_MS);
    expect(figures.ok).toBe(figures.tried);
  });
});
