#!/usr/bin/env node
'use strict';
// `npm test`: lint, typecheck, build, then the jest tiers (unit, integration, e2e, and the short
// form of chaos and attack: CHAOS_SCALE and ATTACK_SCALE unset; `npm run test:chaos` and
// `npm run test:attack` run the full ones), each
// announced, and one closing line `N passed, N failed` over all tiers. Extra arguments go to jest
// (e.g. `npm test -- -t tunnel`). Exit code is non-zero if any step failed.
const { spawnSync } = require('node:child_process');
const { mkdirSync, readFileSync, rmSync } = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const bin = (name) => path.join(root, 'node_modules', '.bin', name);
const extra = process.argv.slice(2);
let passed = 0;
let failed = 0;
let ok = true;

function step(title, cmd, args) {
  process.stdout.write(`\n=== ${title}: ${[path.basename(cmd), ...args].join(' ')}\n`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    process.stdout.write(`=== ${title}: FAILED (exit ${r.status ?? r.signal})\n`);
    ok = false;
  }
  return r.status === 0;
}

step('lint', bin('eslint'), ['.', '--max-warnings', '0']);
step('typecheck', bin('tsc'), ['-p', 'tsconfig.json', '--noEmit']);
// `npm run build`: tsc, then the files the compiled code reads beside itself (Lua scripts).
const built = step('build', 'npm', ['run', '--silent', 'build']);

const outDir = path.join(root, '.local', 'test-results');
mkdirSync(outDir, { recursive: true });
for (const tier of ['unit', 'integration', 'e2e', 'chaos', 'attack']) {
  if (tier !== 'unit' && tier !== 'integration' && !built) {
    process.stdout.write(`\n=== ${tier}: not run, the build failed\n`);
    ok = false;
    continue;
  }
  const out = path.join(outDir, `${tier}.json`);
  rmSync(out, { force: true });
  if (tier === 'attack')
    rmSync(path.join(root, '.local', 'attack-results'), { recursive: true, force: true });
  const args = ['--selectProjects', tier, '--json', '--outputFile', out, ...extra];
  // Daemons' sockets can outlive a test file by a moment; never let that hang CI.
  if (tier !== 'unit') args.push('--runInBand', '--forceExit');
  step(`${tier} tests`, bin('jest'), args);
  try {
    const r = JSON.parse(readFileSync(out, 'utf8'));
    passed += r.numPassedTests;
    failed += r.numFailedTests;
    process.stdout.write(
      `=== ${tier}: ${r.numPassedTests} passed, ${r.numFailedTests} failed in ${r.numTotalTestSuites} files\n`,
    );
    if (r.numTotalTests === 0) {
      process.stdout.write(`=== ${tier}: ran no test\n`);
      ok = false;
    }
  } catch {
    process.stdout.write(`=== ${tier}: no results (jest did not finish)\n`);
    ok = false;
  }
}
// The attack tier's table (one line per attack, what got through): informative here, the
// tests themselves fail when anything got through.
spawnSync(process.execPath, [path.join(root, 'scripts', 'attack-report.js')], { stdio: 'inherit' });
process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
process.exit(ok && failed === 0 ? 0 : 1);
