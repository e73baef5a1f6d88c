import { execFileSync } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describeProblem, ExperimentCatalog, loadExperiments } from './catalog';
import { ExperimentFileError } from './experiment';
import {
  MAX_EXPERIMENT_FILE_BYTES,
  scanExperimentsDir,
  scanExperimentsDirSync,
} from './experiment-files';

/** A valid process experiment `name` whose command says `version`. */
const valid = (name: string, version = 'v1', extra = '') =>
  `name: ${name}\nrunner: process\ncommand: [echo, ${version}]\n${extra}params:\n  type: object\n  properties: { n: { type: integer } }\n`;

function folder(files: Record<string, string> = {}): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-catalog-'));
  for (const [n, t] of Object.entries(files)) writeFileSync(path.join(dir, n), t);
  return dir;
}

/** A catalog loaded from `dir` at start, and a way to read the folder again as a reload does. */
function started(dir: string) {
  const catalog = loadExperiments(dir);
  return { catalog, reread: async () => catalog.apply(await scanExperimentsDir(dir)) };
}

const commandOf = (c: ExperimentCatalog, name: string) => c.get(name)?.command.join(' ');

describe('experiment catalog: reading EXPERIMENTS_DIR again', () => {
  it('a new valid file is installed at the next reading; an unchanged one is not reported', async () => {
    const dir = folder({ 'a.yaml': valid('a') });
    const { catalog, reread } = started(dir);
    writeFileSync(path.join(dir, 'b.yml'), valid('b'));
    expect(await reread()).toEqual({ added: ['b'], changed: [], removed: [], problems: [] });
    expect(catalog.list().map((e) => e.name)).toEqual(['a', 'b']);
    expect(await reread()).toEqual({ added: [], changed: [], removed: [], problems: [] });
  });

  it('a changed valid file replaces the version; params are checked against the version a submission got', async () => {
    const dir = folder({ 'a.yaml': valid('a') });
    const { catalog, reread } = started(dir);
    const v1 = catalog.get('a')!;
    writeFileSync(
      path.join(dir, 'a.yaml'),
      valid('a', 'v2').replace('type: integer', 'type: string'),
    );
    expect((await reread()).changed).toEqual(['a']);
    expect(commandOf(catalog, 'a')).toBe('echo v2');
    // A submission that took v1 just before the change is checked against v1's schema.
    expect(catalog.validateParams(v1, { n: 1 })).toBeUndefined();
    expect(catalog.validateParams(catalog.get('a')!, { n: 1 })).toEqual({
      field: 'params.n',
      problem: 'must be string',
    });
    expect(catalog.validateParams('a', { n: 'x' })).toBeUndefined();
  });

  it('a bad file is a problem naming the file and the field, and the version loaded before stays', async () => {
    const dir = folder({ 'a.yaml': valid('a'), 'b.yaml': valid('b') });
    const { catalog, reread } = started(dir);
    writeFileSync(path.join(dir, 'a.yaml'), valid('a', 'v2').replace('process', 'podman'));
    const changes = await reread();
    expect(changes).toMatchObject({ added: [], changed: [], removed: [] });
    expect(changes.problems).toHaveLength(1);
    expect(describeProblem(changes.problems[0])).toBe(
      `experiment file ${dir}/a.yaml: runner must be one of docker, process (the version loaded before stays in use)`,
    );
    expect(commandOf(catalog, 'a')).toBe('echo v1');
    expect(catalog.problems()).toEqual(changes.problems);
    // Fixed: the new version, and no problem left.
    writeFileSync(path.join(dir, 'a.yaml'), valid('a', 'v3'));
    expect(await reread()).toMatchObject({ changed: ['a'], problems: [] });
    expect(catalog.problems()).toEqual([]);
    expect(commandOf(catalog, 'a')).toBe('echo v3');
  });

  it('a bad new file is not installed; a bad params schema is the file problem too', async () => {
    const dir = folder({ 'a.yaml': valid('a') });
    const { catalog, reread } = started(dir);
    writeFileSync(path.join(dir, 'b.yaml'), valid('b').replace('integer', 'whole'));
    const { added, problems } = await reread();
    expect(added).toEqual([]);
    expect(catalog.get('b')).toBeUndefined();
    expect(describeProblem(problems[0])).toMatch(
      /b\.yaml: params is not a valid JSON Schema: .* \(not loaded\)$/,
    );
  });

  it.each([
    ['emptied (a truncating write caught half-way)', (f: string) => truncateSync(f, 0)],
    ['cut in the middle', (f: string) => writeFileSync(f, valid('a', 'v2').slice(0, 30))],
  ])('a file %s keeps the version loaded before', async (_what, damage) => {
    const dir = folder({ 'a.yaml': valid('a') });
    const { catalog, reread } = started(dir);
    damage(path.join(dir, 'a.yaml'));
    expect((await reread()).problems.map((p) => p.kept)).toEqual([true]);
    expect(commandOf(catalog, 'a')).toBe('echo v1');
  });

  it('a removed file removes its experiment; a file renamed over it (an editor save) changes it', async () => {
    const dir = folder({ 'a.yaml': valid('a'), 'b.yaml': valid('b') });
    const { catalog, reread } = started(dir);
    unlinkSync(path.join(dir, 'b.yaml'));
    writeFileSync(path.join(dir, '.a.yaml.tmp'), valid('a', 'v2'));
    renameSync(path.join(dir, '.a.yaml.tmp'), path.join(dir, 'a.yaml'));
    expect(await reread()).toEqual({ added: [], changed: ['a'], removed: ['b'], problems: [] });
    expect(catalog.get('b')).toBeUndefined();
    expect(() => catalog.validateParams('b', {})).toThrow(/unknown experiment b/);
  });

  it('two files for one name are refused as at start, and the old version stays', async () => {
    const dir = folder({ 'a.yaml': valid('a') });
    const { catalog, reread } = started(dir);
    writeFileSync(path.join(dir, 'a.yml'), valid('a', 'v2'));
    const { changed, problems } = await reread();
    expect(changed).toEqual([]);
    expect(describeProblem(problems[0])).toBe(
      `experiment file ${dir}/a.yml: name 'a' is not unique: ${dir}/a.yaml is for it too (the version loaded before stays in use)`,
    );
    expect(commandOf(catalog, 'a')).toBe('echo v1');
    // At start the same folder stops the worker.
    expect(() => loadExperiments(dir)).toThrow(/a\.yml: name 'a' is not unique/);
  });

  it('the folder gone or unreadable changes nothing (an empty reading would remove everything)', async () => {
    const dir = folder({ 'a.yaml': valid('a') });
    const { catalog, reread } = started(dir);
    rmSync(dir, { recursive: true });
    const changes = await reread();
    expect(changes).toMatchObject({ added: [], changed: [], removed: [] });
    expect(describeProblem(changes.problems[0])).toMatch(
      /cannot be read: ENOENT.*\(every experiment loaded before stays in use\)$/,
    );
    expect(commandOf(catalog, 'a')).toBe('echo v1');
    // Back: read as usual again.
    mkdirSync(dir);
    expect(await reread()).toEqual({ added: [], changed: [], removed: ['a'], problems: [] });
  });

  it('files whose name starts with a dot are not experiment files (editor locks and temporaries)', async () => {
    const dir = folder({ 'a.yaml': valid('a'), '.a.yaml.swp.yaml': 'garbage: [' });
    // Emacs's lock file: a dangling link named .#a.yaml while a buffer is modified.
    symlinkSync('root@host.1234:1700000000', path.join(dir, '.#a.yaml'));
    expect(
      loadExperiments(dir)
        .list()
        .map((e) => e.name),
    ).toEqual(['a']);
    expect((await scanExperimentsDir(dir)).files.map((f) => f.name)).toEqual(['a']);
  });
});

describe('experiment files that are not plain files', () => {
  it('a FIFO, a folder and a link to a device are problems, read without blocking', async () => {
    const dir = folder({ 'a.yaml': valid('a') });
    const { catalog, reread } = started(dir);
    // No writer ever opens this FIFO: opening it for reading without O_NONBLOCK would block.
    execFileSync('mkfifo', [path.join(dir, 'fifo.yaml')]);
    mkdirSync(path.join(dir, 'dir.yaml'));
    symlinkSync('/dev/zero', path.join(dir, 'zero.yaml'));
    const { problems } = await reread();
    expect(problems.map((p) => [path.basename(p.file), p.error.problem])).toEqual([
      ['dir.yaml', 'is a folder: only regular files are read'],
      ['fifo.yaml', 'is a FIFO: only regular files are read'],
      ['zero.yaml', 'is not a regular file: only regular files are read'],
    ]);
    expect(catalog.list().map((e) => e.name)).toEqual(['a']);
    expect(scanExperimentsDirSync(dir).files.filter((f) => f.error)).toHaveLength(3);
  });

  it('a link to a regular file elsewhere is read; a file over the size limit is refused', async () => {
    const elsewhere = folder({ 'b.yaml': valid('b') });
    const dir = folder({ 'a.yaml': valid('a') });
    symlinkSync(path.join(elsewhere, 'b.yaml'), path.join(dir, 'b.yaml'));
    writeFileSync(path.join(dir, 'big.yaml'), valid('big'));
    truncateSync(path.join(dir, 'big.yaml'), MAX_EXPERIMENT_FILE_BYTES + 1);
    const scan = await scanExperimentsDir(dir);
    expect(scan.files.find((f) => f.name === 'b')?.experiment?.command).toEqual(['echo', 'v1']);
    expect(scan.files.find((f) => f.name === 'big')?.error?.problem).toBe(
      `is larger than ${MAX_EXPERIMENT_FILE_BYTES} bytes`,
    );
  });

  it('at start, any problem stops the worker with the file and what is wrong', async () => {
    const dir = folder({ 'a.yaml': valid('a').replace('process', 'podman') });
    await expect(ExperimentCatalog.load(dir)).rejects.toThrow(ExperimentFileError);
    await expect(ExperimentCatalog.load(dir)).rejects.toThrow(
      /a\.yaml: runner must be one of docker, process/,
    );
    await expect(ExperimentCatalog.load(path.join(dir, 'none'))).rejects.toThrow(
      /none: cannot be read: ENOENT/,
    );
  });
});
