import { existsSync } from 'node:fs';
import { waitUntil } from '../support/system';
import { legitimateClient, nodeScriptExperiment, startJobHost, type JobHost } from './job-host';
import { ATTACK_SCALE, recordAttack } from './support';

/**
 * A job whose output/ the retention sweep cannot remove in one go: a chain of 40,000 nested
 * folders (the old removeTree gave up after 1,000 passes of 32 levels, and threw). The job ends,
 * its results expire (RESULTS_TTL 1s), and the worker restarts: its start must not wait for or
 * fail on the sweep (it did: the worker exited), the sweep must remove the chain and go on to
 * the next expired job, and /test must answer meanwhile. The same size in both forms: the old
 * code fails only past 32,000 levels, and removing 40,000 takes some 30 s here.
 */
const LEVELS = 40_000;
/** How long the restarted worker may take to log `worker ready`. */
const READY_MS = 30_000;
/** How long the sweep may take to remove both expired jobs. */
const REMOVED_MS = ATTACK_SCALE.full ? 300_000 : 120_000;

jest.setTimeout(ATTACK_SCALE.full ? 600_000 : 240_000);

const CHAIN_JS = `const fs = require('node:fs');
process.chdir(process.env.JOB_OUTPUT);
for (let i = 0; i < ${LEVELS}; i++) { fs.mkdirSync('d'); process.chdir('d'); }
fs.writeFileSync('bottom', 'x');
`;

describe('retention of a job output the sweep cannot remove in one go', () => {
  let h: JobHost;

  beforeAll(async () => {
    h = await startJobHost(
      (dir) => ({
        'chain.yaml': nodeScriptExperiment('chain', dir, '5m'),
        'plain.yaml':
          'name: plain\nrunner: process\ncommand: ["sh", "-c", "echo ok > $JOB_OUTPUT/ok.txt"]\n' +
          'params: { type: object }\n',
      }),
      { RESULTS_TTL: '1s' },
      { 'chain.js': CHAIN_JS },
    );
  });
  afterAll(() => h?.stop());

  it(`a chain of ${LEVELS} nested folders in output/: the worker restarts, the sweep removes it and the next job`, async () => {
    const chain = await h.api.submit('chain');
    await h.api.waitFor(chain, ['succeeded'], 120_000);
    const plain = await h.api.submit('plain');
    await h.api.waitFor(plain, ['succeeded'], 60_000);
    await new Promise((r) => setTimeout(r, 1_500)); // both expired (RESULTS_TTL 1s)
    const dirs = [h.jobDir('chain', chain), h.jobDir('plain', plain)];

    const t0 = performance.now();
    let started = true;
    await h.restart(READY_MS).catch(() => (started = false));
    const readyMs = performance.now() - t0;
    let removedMs = -1;
    const legit = started ? legitimateClient(h.api) : undefined;
    if (started) {
      await waitUntil('both expired jobs removed', () => !dirs.some(existsSync), REMOVED_MS).catch(
        () => undefined,
      );
      if (!dirs.some(existsSync)) removedMs = performance.now() - t0;
    }
    const figures = (await legit?.stop()) ?? { tried: 0, ok: 0, latenciesMs: [] };
    const left = dirs.filter(existsSync).length;
    recordAttack('jobs-retention-deep-chain', {
      attack: `a job leaves a chain of ${LEVELS} nested folders in output/; its results expire; the worker restarts`,
      times: 1,
      gotThrough: (started ? 0 : 1) + left + (figures.ok === figures.tried ? 0 : 1),
      counted: `a worker not ready within ${READY_MS / 1000} s, expired job folders left after ${REMOVED_MS / 1000} s, a failed /test`,
      legit: figures,
      extra: {
        readyMs: Math.round(readyMs),
        removedMs: Math.round(removedMs),
        workerExit: h.daemon.child.exitCode,
        sweepLog: h.daemon
          .stderr()
          .split('\n')
          .filter((l) => l.includes('retention'))
          .slice(0, 3),
      },
    });
    expect(started).toBe(true);
    expect(left).toBe(0);
    expect(figures.ok).toBe(figures.tried);
  });
});
