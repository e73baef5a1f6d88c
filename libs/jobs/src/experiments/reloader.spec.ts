import { mkdirSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { loadExperiments } from './catalog';
import { ExperimentsReloader } from './reloader';

const valid = (name: string, version = 'v1', gpus = 0) =>
  `name: ${name}\nrunner: process\ncommand: [echo, ${version}]\ngpus: ${gpus}\nparams: { type: object }\n`;

interface Line {
  level: number;
  msg: string;
  [k: string]: unknown;
}

const started: ExperimentsReloader[] = [];
afterEach(() => {
  for (const r of started.splice(0)) r.close();
});

/** A reloader on a new folder holding `a`, with every log line it wrote. */
function setUp(opts: { rewatchMs?: number } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-reloader-'));
  writeFileSync(path.join(dir, 'a.yaml'), valid('a'));
  const lines: Line[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as Line) });
  const catalog = loadExperiments(dir);
  const reloader = new ExperimentsReloader({
    dir,
    catalog,
    log,
    debounceMs: 50,
    rewatchMs: opts.rewatchMs ?? 100,
    note: (exp) =>
      exp.gpus > 0 ? `experiment '${exp.name}' needs GPUs this host lacks` : undefined,
  });
  started.push(reloader);
  const names = () => catalog.list().map((e) => e.name);
  const logged = (msg: string) => lines.filter((l) => l.msg.includes(msg));
  return { dir, catalog, reloader, names, lines, logged };
}

/** Waits (at most 5 s: the watch promises about a second) until `check` holds. */
async function within5s(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within 5 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('ExperimentsReloader', () => {
  it('reload() logs each change, a warning naming each bad file, and the note on new versions', async () => {
    const { dir, reloader, logged, lines } = setUp();
    writeFileSync(path.join(dir, 'b.yaml'), valid('b', 'v1', 2));
    writeFileSync(path.join(dir, 'a.yaml'), 'name: a\nrunner: process\n');
    const changes = await reloader.reload('SIGHUP');
    expect(changes).toMatchObject({ added: ['b'], changed: [], removed: [] });
    expect(logged('experiment added')).toMatchObject([{ experiment: 'b', trigger: 'SIGHUP' }]);
    const warnings = lines.filter((l) => l.level === 40).map((l) => l.msg);
    expect(warnings).toEqual([
      `experiment file ${dir}/a.yaml: command is required (the version loaded before stays in use)`,
      "experiment 'b' needs GPUs this host lacks",
    ]);
    expect(logged('experiments reloaded')).toMatchObject([
      { trigger: 'SIGHUP', experiments: ['a', 'b'], added: ['b'], problems: 1 },
    ]);
  });

  it('reload() calls during a reading share one more reading after it: the last change is read', async () => {
    const { dir, reloader, logged, names } = setUp();
    const first = reloader.reload('one');
    // Written after the first reading may have listed the folder.
    writeFileSync(path.join(dir, 'b.yaml'), valid('b'));
    const [second, third] = [reloader.reload('two'), reloader.reload('three')];
    expect(second).toBe(third);
    await Promise.all([first, second]);
    expect(logged('experiments reloaded').map((l) => l.trigger)).toEqual(['one', 'two']);
    expect(names()).toEqual(['a', 'b']);
  });

  it('a quiet reading (the catch-up after start-up) logs only when something changed', async () => {
    const { dir, reloader, logged } = setUp();
    await reloader.reload('start-up', true);
    expect(logged('experiments reloaded')).toEqual([]);
    writeFileSync(path.join(dir, 'b.yaml'), valid('b'));
    await reloader.reload('start-up', true);
    expect(logged('experiments reloaded')).toMatchObject([{ trigger: 'start-up', added: ['b'] }]);
  });

  it('the watch reads a file added, renamed into place or removed, without any call', async () => {
    const { dir, reloader, names, catalog } = setUp();
    reloader.watch();
    writeFileSync(path.join(dir, 'b.yaml'), valid('b'));
    await within5s('b added', () => names().includes('b'));
    // An editor's save: a temporary file renamed over the old one.
    writeFileSync(path.join(dir, '.b.yaml.tmp'), valid('b', 'v2'));
    renameSync(path.join(dir, '.b.yaml.tmp'), path.join(dir, 'b.yaml'));
    await within5s('b changed', () => catalog.get('b')?.command[1] === 'v2');
    renameSync(path.join(dir, 'a.yaml'), path.join(dir, 'a.yaml.off'));
    await within5s('a removed', () => !names().includes('a'));
  });

  it('a folder moved away and made again at its path is watched again, and read', async () => {
    const { dir, reloader, names, logged } = setUp();
    reloader.watch();
    renameSync(dir, `${dir}.old`);
    await within5s('the lost watch said', () => logged('no file watch on').length === 1);
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'c.yaml'), valid('c'));
    await within5s('c read from the new folder', () => names().join() === 'c');
    expect(logged('watching the folder again')).toHaveLength(1);
    // The watch is on the new folder now.
    writeFileSync(path.join(dir, 'd.yaml'), valid('d'));
    await within5s('d added', () => names().join() === 'c,d');
  });
});
