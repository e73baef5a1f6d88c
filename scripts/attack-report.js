#!/usr/bin/env node
'use strict';
// Prints the table of the last attack run (`npm run test:attack`, or the attack tier of
// `npm test`): one line per attack from .local/attack-results/*.json (test/attack/support.ts).
// Exit 1 when an attack got anything through.
const { readdirSync, readFileSync } = require('node:fs');
const path = require('node:path');

const dir = path.join(__dirname, '..', '.local', 'attack-results');
let files = [];
try {
  files = readdirSync(dir).filter((f) => f.endsWith('.json'));
} catch {
  /* no run yet */
}
if (files.length === 0) {
  console.log('no attack results: run `npm run test:attack`');
  process.exit(1);
}
let through = 0;
console.log('attack results (what got through must be 0):');
for (const f of files.sort()) {
  const r = JSON.parse(readFileSync(path.join(dir, f), 'utf8'));
  through += r.gotThrough;
  console.log(`  [${r.scale}] ${r.line}`);
}
process.exit(through === 0 ? 0 : 1);
