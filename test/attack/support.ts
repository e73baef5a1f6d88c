import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../support/daemon';

/**
 * The size of an attack run: ATTACK_SCALE=full (`npm run test:attack`, the figures in
 * docs/RELIABILITY.md) or the short form that CI's `npm test` runs every time.
 */
export const ATTACK_SCALE = {
  full: process.env.ATTACK_SCALE === 'full',
  name: process.env.ATTACK_SCALE === 'full' ? 'full' : 'short',
};

/** How the legitimate user fared while an attack ran. */
export interface LegitFigures {
  /** Requests (or handshakes) the legitimate client made during the attack. */
  tried: number;
  /** How many of them succeeded. */
  ok: number;
  /** Their latencies, in ms (p50 and max are reported). */
  latenciesMs: number[];
}

/** One attack's result: what was tried, how often, and what got through (must be 0). */
export interface AttackFigures {
  /** What the attacker did, in a few words. */
  attack: string;
  /** How many times (requests, connections, swaps, ...). */
  times: number;
  /** What got through: host bytes served, a hung worker, a legitimate client locked out... */
  gotThrough: number;
  /** What `gotThrough` counts, in a few words. */
  counted: string;
  legit: LegitFigures;
  /** Anything else worth printing (descriptors, RSS, ...). */
  extra?: Record<string, unknown>;
}

const ms = (v: number | undefined): string => (v === undefined ? '-' : `${v.toFixed(1)} ms`);

function quantile(sorted: number[], q: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** One line for the report: `NAME: ATTACK ×TIMES, through 0 (COUNTED); legit ok/tried, p50, max`. */
export function attackLine(name: string, f: AttackFigures): string {
  const sorted = [...f.legit.latenciesMs].sort((a, b) => a - b);
  return (
    `${name}: ${f.attack} ×${f.times}; got through ${f.gotThrough} (${f.counted}); ` +
    `legitimate ${f.legit.ok}/${f.legit.tried} ok, p50 ${ms(quantile(sorted, 0.5))}, ` +
    `max ${ms(sorted.at(-1))}`
  );
}

/**
 * Writes an attack's figures to .local/attack-results/NAME.json and prints its line, so that
 * `npm run test:attack` (scripts/attack-report.js) can print the table of the whole run.
 */
export function recordAttack(name: string, f: AttackFigures): void {
  const dir = path.join(ROOT, '.local', 'attack-results');
  mkdirSync(dir, { recursive: true });
  const sorted = [...f.legit.latenciesMs].sort((a, b) => a - b);
  const record = {
    name,
    scale: ATTACK_SCALE.name,
    at: new Date().toISOString(),
    line: attackLine(name, f),
    ...f,
    legit: {
      tried: f.legit.tried,
      ok: f.legit.ok,
      p50Ms: quantile(sorted, 0.5),
      p99Ms: quantile(sorted, 0.99),
      maxMs: sorted.at(-1),
    },
  };
  writeFileSync(path.join(dir, `${name}.json`), `${JSON.stringify(record, null, 2)}\n`);
  process.stdout.write(`attack ${record.line}\n`);
}

/** Times `fn`, in ms, and whether it resolved truthy (a legitimate client's try). */
export async function timed(fn: () => Promise<boolean>): Promise<{ ok: boolean; ms: number }> {
  const t0 = performance.now();
  const ok = await fn().catch(() => false);
  return { ok, ms: performance.now() - t0 };
}

/**
 * A legitimate user beside an attack: `one(i)` for i = 0, 1, 2, ... with `pauseMs` between
 * tries, each timed, until stop(), which resolves with the figures of every try.
 */
export function legitLoop(
  one: (i: number) => Promise<boolean>,
  pauseMs: number,
): { stop(): Promise<LegitFigures> } {
  const figures: LegitFigures = { tried: 0, ok: 0, latenciesMs: [] };
  let running = true;
  const loop = (async () => {
    for (let i = 0; running; i++) {
      const t = await timed(() => one(i));
      figures.tried++;
      if (t.ok) figures.ok++;
      figures.latenciesMs.push(t.ms);
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return figures;
    },
  };
}
