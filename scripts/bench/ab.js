#!/usr/bin/env node
'use strict';
// `npm run bench:ab -- A B [C...]`: the tunnel bench of several git revisions (or `.` for the
// working tree as built), run alternately in one sitting, gpu-sidecar only, one round each time.
// Why: on the shared 2-core machines the same build's figures drift up to 2x within an hour, so
// a change is only judged against its base measured between the same minutes (PROTOCOL.md §8).
// Each revision is checked out into a temporary git worktree, built there (npm run build), and its own
// scripts/bench/tunnel.js runs it. Prints every run's figures per measure, then the medians.
//   AB_RUNS=3 (alternations)  BENCH_ONLY=abcde  and any BENCH_* of tunnel.js pass through.
const { execFileSync, spawnSync } = require('node:child_process');
const { existsSync, mkdtempSync, rmSync, symlinkSync } = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..', '..');
const revs = process.argv.slice(2);
if (revs.length < 2) {
  console.error(
    'usage: npm run bench:ab -- REV_A REV_B [REV...]   (`.` = the working tree as built)',
  );
  process.exit(2);
}
const RUNS = Number(process.env.AB_RUNS ?? 3);
const tmp = mkdtempSync(path.join(os.tmpdir(), 'gsc-ab-'));
const worktrees = [];

/** A folder holding `rev` built: the checkout itself for `.`, else a new worktree. */
function prepare(rev) {
  if (rev === '.') return root;
  const dir = path.join(tmp, rev.replace(/[^A-Za-z0-9._-]/g, '_'));
  execFileSync('git', ['-C', root, 'worktree', 'add', '--detach', dir, rev], { stdio: 'ignore' });
  worktrees.push(dir);
  symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  process.stderr.write(`building ${rev} in ${dir}\n`);
  // That revision's own `npm run build` (since 2026-12 it also copies the jobs' Lua scripts
  // into dist; an older one is tsc alone).
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: dir, stdio: 'inherit' });
  // Its native frame cipher, where the revision has one (since 2026-12-05): node_modules is
  // shared, the addon's build is not.
  if (existsSync(path.join(dir, 'scripts', 'build-native.js')))
    execFileSync(process.execPath, ['scripts/build-native.js'], { cwd: dir, stdio: 'ignore' });
  return dir;
}

/** One bench run of the build in `dir`: measure label → figure (as printed). */
function run(dir) {
  const out = spawnSync(process.execPath, [path.join(dir, 'scripts', 'bench', 'tunnel.js')], {
    cwd: dir,
    env: { ...process.env, BENCH_ROUNDS: '1', BENCH_PATHS: 'gpu-sidecar' },
    encoding: 'utf8',
  });
  if (out.status !== 0) throw new Error(`bench failed in ${dir}:\n${out.stderr.slice(-2000)}`);
  const figures = {};
  for (const line of out.stdout.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    // | measure | gpu-sidecar | target | met |
    if (cells.length >= 4 && cells[1].startsWith('(') && cells[2] !== 'n/a')
      figures[cells[1]] = cells[2];
  }
  return figures;
}

const num = (s) => Number.parseFloat(String(s).replace(/[^0-9.+-]/g, ''));
const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

try {
  const dirs = revs.map(prepare);
  const results = revs.map(() => []);
  for (let i = 0; i < RUNS; i++) {
    revs.forEach((rev, j) => {
      process.stderr.write(`run ${i + 1}/${RUNS}: ${rev}\n`);
      results[j].push(run(dirs[j]));
    });
  }
  // tunnel.js prints (f) with zeros when it did not measure it.
  const only = process.env.BENCH_ONLY ?? 'abcdef';
  const measures = [...new Set(results.flat().flatMap((r) => Object.keys(r)))].filter((m) =>
    only.includes(m[1]),
  );
  console.log(`\n| measure | ${revs.map((r) => `${r}: each run (median)`).join(' | ')} |`);
  console.log(`|---|${revs.map(() => '---|').join('')}`);
  for (const m of measures) {
    const cells = results.map((runs) => {
      const xs = runs.map((r) => r[m]);
      return `${xs.map((x) => x ?? '-').join(', ')} (${median(xs.map(num))})`;
    });
    console.log(`| ${m} | ${cells.join(' | ')} |`);
  }
  console.log(`\n${RUNS} alternations, load ${os.loadavg()[0].toFixed(1)} at the end`);
} finally {
  for (const dir of worktrees) {
    spawnSync('git', ['-C', root, 'worktree', 'remove', '--force', dir], { stdio: 'ignore' });
  }
  if (existsSync(tmp)) rmSync(tmp, { recursive: true, force: true });
}
