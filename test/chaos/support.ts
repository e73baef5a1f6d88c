import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../support/daemon';

/**
 * The size of a chaos run: CHAOS_SCALE=full (`npm run test:chaos`, the figures in
 * docs/RELIABILITY.md) or the short form CI's `npm test` runs every time.
 */
export const SCALE = {
  full: process.env.CHAOS_SCALE === 'full',
  name: process.env.CHAOS_SCALE === 'full' ? 'full' : 'short',
};

/**
 * Writes a scenario's figures to .local/chaos-results/NAME.json (and prints them), so that a
 * full run's numbers can be copied into docs/RELIABILITY.md as measured.
 */
export function recordChaos(name: string, figures: Record<string, unknown>): void {
  const dir = path.join(ROOT, '.local', 'chaos-results');
  mkdirSync(dir, { recursive: true });
  const record = { scenario: name, at: new Date().toISOString(), ...figures };
  writeFileSync(path.join(dir, `${name}.json`), `${JSON.stringify(record, null, 2)}\n`);
  process.stdout.write(`chaos ${name}: ${JSON.stringify(figures)}\n`);
}
