#!/usr/bin/env node
'use strict';
// `npm run graph`: the imports between the libs and apps of a tree (this repository, or the
// folder given as argument), read from the TypeScript sources with TypeScript's own scanner.
// Prints each lib and app with what it imports, then the deep imports (a file of another lib
// reached other than through that lib's src/index.ts) and the cycles, between libs and apps
// and between the files of one lib or app. Exits 1 when there is any deep import or cycle
// (docs/ARCHITECTURE.md, "Layout and the direction of imports").
const { existsSync, readdirSync, readFileSync, statSync } = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

const GROUPS = ['libs', 'apps'];
const SKIP = new Set(['node_modules', 'dist', 'coverage']);

/** Every .ts file under dir (a .d.ts included: it can import too). */
function sources(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (SKIP.has(entry.name) || entry.name.startsWith('.')) continue;
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sources(p));
    else if (entry.isFile() && entry.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** The file a relative specifier names, the way TypeScript resolves it (no paths mapping here). */
function resolve(fromFile, spec) {
  const base = path.resolve(path.dirname(fromFile), spec);
  for (const c of [`${base}.ts`, `${base}.d.ts`, path.join(base, 'index.ts'), base]) {
    if (existsSync(c) && statSync(c).isFile()) return c;
  }
  return undefined;
}

/** `libs/jobs` for a file of libs/jobs, or undefined outside libs/ and apps/. */
function moduleOf(root, file) {
  const [group, name] = path.relative(root, file).split(path.sep);
  return GROUPS.includes(group) && name ? `${group}/${name}` : undefined;
}

const isSpec = (file) => /\.(spec|int-spec|e2e-spec)\.ts$/.test(file);

/**
 * Strongly connected components of more than one node, or of one that imports itself (Tarjan).
 * `next(node)` lists the nodes it imports. Each cycle is given in a stable order.
 */
function cyclesOf(nodes, next) {
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const stack = [];
  const onStack = new Set();
  const out = [];
  const visit = (v) => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of next(v)) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const scc = [];
      let w;
      do {
        w = stack.pop();
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || next(v).includes(v)) out.push(scc.sort());
    }
  };
  for (const n of [...nodes].sort()) if (!idx.has(n)) visit(n);
  return out.sort((a, b) => a[0].localeCompare(b[0]));
}

/**
 * The import graph of the tree at `root`: `modules` (libs/x, apps/y), `edges` (module → the
 * modules it imports, each with whether only spec files import it), `deep` (imports into a lib
 * other than through its src/index.ts), `cycles` (between modules) and `fileCycles` (between
 * the files of one module).
 */
function analyze(root) {
  root = path.resolve(root);
  const modules = [];
  for (const group of GROUPS) {
    const dir = path.join(root, group);
    if (!existsSync(dir)) continue;
    for (const e of readdirSync(dir, { withFileTypes: true }))
      if (e.isDirectory()) modules.push(`${group}/${e.name}`);
  }
  modules.sort();
  const edges = new Map(modules.map((m) => [m, new Map()]));
  const fileEdges = new Map();
  const deep = [];
  const rel = (f) => path.relative(root, f).split(path.sep).join('/');
  for (const mod of modules) {
    for (const file of sources(path.join(root, mod))) {
      const text = readFileSync(file, 'utf8');
      const targets = [];
      for (const { fileName: spec } of ts.preProcessFile(text, true, true).importedFiles) {
        if (!spec.startsWith('.')) continue;
        const target = resolve(file, spec);
        if (!target) continue;
        const to = moduleOf(root, target);
        if (to === mod) {
          targets.push(rel(target));
          continue;
        }
        if (!to) continue;
        const spec0 = isSpec(file);
        const seen = edges.get(mod).get(to);
        edges.get(mod).set(to, { specOnly: (seen ? seen.specOnly : true) && spec0 });
        const from = rel(file);
        const isDeep = to.startsWith('libs/') && rel(target) !== `${to}/src/index.ts`;
        if (isDeep && !deep.some((d) => d.from === from && d.spec === spec))
          deep.push({ from, spec, to: rel(target) });
      }
      fileEdges.set(rel(file), targets);
    }
  }
  const cycles = cyclesOf(modules, (m) => [...edges.get(m).keys()]);
  const fileCycles = cyclesOf([...fileEdges.keys()], (f) => fileEdges.get(f) ?? []);
  return { modules, edges, deep, cycles, fileCycles };
}

function report(g) {
  const lines = [];
  const width = Math.max(...g.modules.map((m) => m.length));
  lines.push('imports between libs and apps (* only from spec files):');
  for (const m of g.modules) {
    const to = [...g.edges.get(m)].sort(([a], [b]) => a.localeCompare(b));
    const list = to.map(([t, e]) => `${t}${e.specOnly ? '*' : ''}`).join(', ');
    lines.push(`  ${m.padEnd(width)} -> ${list || '(nothing)'}`);
  }
  lines.push(`deep imports (not through the lib's src/index.ts): ${g.deep.length || 'none'}`);
  for (const d of g.deep) lines.push(`  ${d.from}: '${d.spec}'`);
  lines.push(`cycles between libs and apps: ${g.cycles.length || 'none'}`);
  for (const c of g.cycles) lines.push(`  ${c.join(' <-> ')}`);
  lines.push(`cycles between files of one lib or app: ${g.fileCycles.length || 'none'}`);
  for (const c of g.fileCycles) lines.push(`  ${c.join(' <-> ')}`);
  return lines.join('\n');
}

module.exports = { analyze, report, cyclesOf };

if (require.main === module) {
  const root = process.argv[2] ?? path.join(__dirname, '..');
  const g = analyze(root);
  process.stdout.write(`${report(g)}\n`);
  process.exitCode = g.deep.length || g.cycles.length || g.fileCycles.length ? 1 : 0;
}
