import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

// scripts/import-graph.js (`npm run graph`): the imports between libs and apps, their cycles and
// the imports that reach past a lib's src/index.ts.
const root = path.join(__dirname, '..', '..');
const script = path.join(root, 'scripts', 'import-graph.js');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { analyze } = require(script) as {
  analyze(root: string): {
    modules: string[];
    edges: Map<string, Map<string, { specOnly: boolean }>>;
    deep: { from: string; spec: string; to: string }[];
    cycles: string[][];
    fileCycles: string[][];
  };
};

const graph = (dir: string) => spawnSync(process.execPath, [script, dir], { encoding: 'utf8' });

/** A tree of files: { 'libs/a/src/index.ts': "export * from '../../b/src';" }. */
function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-graph-'));
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), text);
  }
  return dir;
}

describe('import graph', () => {
  const made: string[] = [];
  const temp = (files: Record<string, string>) => {
    const dir = tree(files);
    made.push(dir);
    return dir;
  };
  afterAll(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('finds no cycle and no deep import in this repository, and libs import only the floor', () => {
    const g = analyze(root);
    expect(g.cycles).toEqual([]);
    expect(g.fileCycles).toEqual([]);
    expect(g.deep).toEqual([]);
    const floor = ['libs/config', 'libs/docker', 'libs/metrics'];
    for (const m of g.modules.filter((m) => m.startsWith('libs/'))) {
      const to = [...g.edges.get(m)!.keys()];
      expect([m, to.filter((t) => !floor.includes(t))]).toEqual([m, []]);
    }
    expect([...g.edges.get('libs/config')!.keys()]).toEqual([]);
    const r = graph(root);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('cycles between libs and apps: none');
  });

  it('fails on a cycle between two libs, naming it', () => {
    const dir = temp({
      'libs/a/src/index.ts': "export { b } from '../../b/src';\nexport const a = 1;\n",
      'libs/b/src/index.ts': "import { a } from '../../a/src';\nexport const b = a;\n",
      'libs/c/src/index.ts': "import type { a } from '../../a/src';\nexport type C = typeof a;\n",
    });
    expect(analyze(dir).cycles).toEqual([['libs/a', 'libs/b']]);
    const r = graph(dir);
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('libs/c -> libs/a');
    expect(r.stdout).toMatch(/cycles between libs and apps: 1\n {2}libs\/a <-> libs\/b\n/);
  });

  it('fails on a cycle through a type-only import in a spec, and between files of one lib', () => {
    const dir = temp({
      'libs/a/src/index.ts': "export * from './x';\n",
      'libs/a/src/x.ts': "import type { Y } from './y';\nexport type X = Y;\n",
      'libs/a/src/y.ts': "import type { X } from './x';\nexport type Y = X | 1;\n",
      'libs/a/src/a.spec.ts': "import type { B } from '../../b/src';\nexport type A = B;\n",
      'libs/b/src/index.ts': "export type { X as B } from '../../a/src';\n",
    });
    const g = analyze(dir);
    expect(g.cycles).toEqual([['libs/a', 'libs/b']]);
    expect(g.edges.get('libs/a')!.get('libs/b')).toEqual({ specOnly: true });
    expect(g.fileCycles).toEqual([['libs/a/src/x.ts', 'libs/a/src/y.ts']]);
    expect(graph(dir).status).toBe(1);
  });

  it("fails on an import of another lib's file, and passes once it goes through the index", () => {
    const files = {
      'libs/a/src/index.ts': "export * from './inner';\n",
      'libs/a/src/inner.ts': 'export const inner = 1;\n',
      'apps/x/src/main.ts':
        "import { inner } from '../../../libs/a/src/inner';\nexport const m = inner;\n",
    };
    const dir = temp(files);
    expect(analyze(dir).deep).toEqual([
      { from: 'apps/x/src/main.ts', spec: '../../../libs/a/src/inner', to: 'libs/a/src/inner.ts' },
    ]);
    const r = graph(dir);
    expect(r.status).toBe(1);
    expect(r.stdout).toContain("apps/x/src/main.ts: '../../../libs/a/src/inner'");
    const fixed = temp({
      ...files,
      'apps/x/src/main.ts':
        "import { inner } from '../../../libs/a/src';\nexport const m = inner;\n",
    });
    expect(graph(fixed).status).toBe(0);
  });
});
