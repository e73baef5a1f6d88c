import {
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { JobPaths } from '../runner/runner';
import {
  atomicWrite,
  FileNotFoundError,
  isNoSpace,
  ResultsStore,
  UnsafePathError,
} from './results.store';

const ID = '0b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f';
const OTHER = '1b9f7c1e-8a2d-4c3b-9e5f-1a2b3c4d5e6f';

/** Reads an output file through openOutputFile, closing it. */
async function read(store: ResultsStore, p: JobPaths, rel: string): Promise<string> {
  const { handle } = await store.openOutputFile(p, rel);
  try {
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

function setup() {
  const data = mkdtempSync(path.join(tmpdir(), 'gsc-store-'));
  const store = new ResultsStore(data);
  const p = store.paths('hello', ID);
  mkdirSync(path.join(p.output, 'sub'), { recursive: true });
  writeFileSync(path.join(p.output, 'a.txt'), 'A');
  writeFileSync(path.join(p.output, 'sub', 'b.txt'), 'B');
  const other = store.paths('hello', OTHER);
  mkdirSync(other.output, { recursive: true });
  writeFileSync(path.join(other.output, 'secret.txt'), 'S');
  writeFileSync(path.join(p.dir, 'params.json'), '{}');
  return { store, p, other };
}

describe('results store', () => {
  it('opens plain relative paths inside the output folder', async () => {
    const { store, p } = setup();
    expect(await read(store, p, 'a.txt')).toBe('A');
    expect(await read(store, p, 'sub/b.txt')).toBe('B');
  });

  it.each([
    '../params.json',
    'sub/../../params.json',
    '..',
    './a.txt',
    '/etc/passwd',
    '%2e%2e/params.json',
    '%252e%252e/params.json',
    'sub\\..\\..\\params.json',
    'a.txt\0.png',
    'sub//b.txt',
    '',
  ])('refuses %j as unsafe', async (bad) => {
    const { store, p } = setup();
    await expect(store.openOutputFile(p, bad)).rejects.toBeInstanceOf(UnsafePathError);
  });

  it('refuses a symlink the job made, to a file outside or to another job', async () => {
    const { store, p, other } = setup();
    symlinkSync('/etc/passwd', path.join(p.output, 'passwd'));
    symlinkSync(path.join(other.output, 'secret.txt'), path.join(p.output, 'peek.txt'));
    symlinkSync(other.output, path.join(p.output, 'otherdir'));
    symlinkSync(path.join(p.output, 'a.txt'), path.join(p.output, 'inside-link.txt'));
    for (const f of ['passwd', 'peek.txt', 'otherdir/secret.txt', 'inside-link.txt']) {
      await expect(store.openOutputFile(p, f)).rejects.toBeInstanceOf(UnsafePathError);
    }
  });

  it('answers not found for a missing file or a folder', async () => {
    const { store, p } = setup();
    await expect(store.openOutputFile(p, 'nope.txt')).rejects.toBeInstanceOf(FileNotFoundError);
    await expect(store.openOutputFile(p, 'sub')).rejects.toBeInstanceOf(FileNotFoundError);
    await expect(store.openOutputFile(p, 'a.txt/x')).rejects.toBeInstanceOf(FileNotFoundError);
  });

  it('refuses job ids and experiment names that are not plain', () => {
    const { store } = setup();
    expect(() => store.paths('hello', '../../etc')).toThrow(UnsafePathError);
    expect(() => store.paths('../x', ID)).toThrow(UnsafePathError);
  });

  it('lists output files recursively without symlinks', async () => {
    const { store, p } = setup();
    symlinkSync('/etc/passwd', path.join(p.output, 'passwd'));
    expect(await store.listOutput(p)).toEqual({
      files: [
        { path: 'a.txt', size: 1 },
        { path: 'sub/b.txt', size: 1 },
      ],
    });
  });

  it('bounds the listing: files, names looked at, depth and time, each saying so', async () => {
    const { store, p } = setup();
    for (let i = 0; i < 20; i++) writeFileSync(path.join(p.output, `f${i}`), 'x');
    mkdirSync(path.join(p.output, 'sub/deep/deeper'), { recursive: true });
    writeFileSync(path.join(p.output, 'sub/deep/deeper/z'), 'x');
    const loose = { files: 1000, pathBytes: 1e6, entries: 1000, depth: 32, ms: 5000 };
    const all = await store.listOutput(p, loose);
    expect(all.truncated).toBeUndefined();
    expect(all.files).toHaveLength(23);
    const few = await store.listOutput(p, { ...loose, files: 5 });
    expect(few.files).toHaveLength(5);
    expect(few.truncated).toBe('it stops at 5 files');
    expect(few.files.map((f) => f.path)).toEqual([...few.files.map((f) => f.path)].sort());
    expect((await store.listOutput(p, { ...loose, entries: 3 })).truncated).toMatch(
      /after 3 names/,
    );
    const shallow = await store.listOutput(p, { ...loose, depth: 2 });
    expect(shallow.truncated).toMatch(/more than 2 levels deep/);
    expect(shallow.files.some((f) => f.path === 'sub/deep/deeper/z')).toBe(false);
    expect((await store.listOutput(p, { ...loose, ms: -1 })).truncated).toMatch(/too long/);
    const short = await store.listOutput(p, { ...loose, pathBytes: 10 });
    expect(short.truncated).toBe('it stops at 10 bytes of paths (as JSON text)');
    expect(short.files.map((f) => f.path).join('').length).toBeLessThanOrEqual(10);
  });

  it('bounds the bytes of paths: 300 files of 3.8 KB paths of \\x01 answer 1 MB, not 5.4 MB', async () => {
    const { store, p } = setup();
    // 14 folders of 255-byte names of \x01 (each \u0001, 6 bytes, in JSON), 300 hard links.
    let deep = p.output;
    for (let i = 0; i < 14; i++) deep = path.join(deep, String.fromCharCode(1 + i).repeat(255));
    mkdirSync(deep, { recursive: true });
    writeFileSync(path.join(deep, 'x'), 'y');
    for (let i = 0; i < 300; i++) {
      linkSync(
        path.join(deep, 'x'),
        path.join(deep, i.toString(36).padStart(4, '0') + '\x01'.repeat(251)),
      );
    }
    const listed = await store.listOutput(p);
    const json = JSON.stringify({ ...listed, truncated: true });
    expect(json.length).toBeLessThan(1_100_000);
    expect(listed.truncated).toBe('it stops at 1000000 bytes of paths (as JSON text)');
    expect(listed.files.length).toBeGreaterThan(40);
  });

  it('names upload files after WORKER_NAME, by a hash when the name is not plain', () => {
    const data = mkdtempSync(path.join(tmpdir(), 'gsc-store-'));
    expect(new ResultsStore(data, 'gpu-1.lab').newUploadName()).toMatch(
      /^gpu-1\.lab~[0-9a-f-]{36}$/,
    );
    expect(new ResultsStore(data, 'gpu 1/~x').newUploadName()).toMatch(
      /^h[0-9a-f]{16}~[0-9a-f-]{36}$/,
    );
  });

  it('writes records atomically, leaving no temporary file', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'gsc-atomic-'));
    const f = path.join(dir, 'job.json');
    await atomicWrite(f, 'one');
    await atomicWrite(f, 'two');
    expect(readFileSync(f, 'utf8')).toBe('two');
    expect(readdirSync(dir)).toEqual(['job.json']);
  });

  it('reports a disk shortage below MIN_FREE_DISK with the reason', async () => {
    const { store } = setup();
    expect(await store.diskShortage({ percent: 0 })).toBeUndefined();
    expect(await store.diskShortage({ percent: 100 })).toMatch(/below MIN_FREE_DISK 100%/);
    expect(await store.diskShortage({ bytes: Number.MAX_SAFE_INTEGER })).toMatch(
      /bytes, below MIN_FREE_DISK/,
    );
  });

  it('records and finds the exited-0 mark of a job', async () => {
    const { store, p } = setup();
    mkdirSync(path.dirname(p.log), { recursive: true });
    expect(await store.exitedOk('hello', ID)).toBe(false);
    await store.markExitedOk('hello', ID);
    expect(await store.exitedOk('hello', ID)).toBe(true);
    expect(await store.exitedOk('hello', OTHER)).toBe(false);
    // A bad id is never a path.
    expect(await store.exitedOk('hello', '../x')).toBe(false);
  });

  it("fsyncs a succeeded job's output within a bound, and says when it stopped there", async () => {
    const { store, p } = setup();
    for (let i = 0; i < 20; i++) writeFileSync(path.join(p.output, `f${i}`), 'x');
    const rec = { id: ID, experiment: 'hello', state: 'succeeded' } as never;
    expect(await store.writeFinal(rec, true)).toBeUndefined();
    // Past the bound (a job that left a million hard links), the record is still written.
    rmSync(path.join(p.dir, 'job.json'));
    expect(await store.writeFinal(rec, true, { entries: 5, ms: 10_000 })).toMatch(/after 5 names/);
    expect(JSON.parse(readFileSync(path.join(p.dir, 'job.json'), 'utf8'))).toMatchObject({
      state: 'succeeded',
    });
    expect(await store.writeFinal(rec, true, { entries: 100, ms: -1 })).toMatch(/too long/);
    expect(await store.writeFinal(rec, false, { entries: 0, ms: -1 })).toBeUndefined();
  });

  it('leaves no temporary file when a final record cannot be written', async () => {
    const { store, p } = setup();
    // job.json is a folder: the rename fails, as a full disk makes the write fail.
    mkdirSync(path.join(p.dir, 'job.json'));
    const rec = { id: ID, experiment: 'hello', state: 'succeeded' } as never;
    await expect(store.writeFinal(rec, true)).rejects.toThrow();
    await expect(atomicWrite(path.join(p.dir, 'job.json'), 'x')).rejects.toThrow();
    expect(readdirSync(p.dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('tells a full disk from other errors', async () => {
    const { store } = setup();
    expect(isNoSpace(Object.assign(new Error('x'), { code: 'ENOSPC' }))).toBe(true);
    expect(
      isNoSpace('cannot write /x/logs/output.log: ENOSPC: no space left on device, write'),
    ).toBe(true);
    expect(isNoSpace(Object.assign(new Error('x'), { code: 'EACCES' }))).toBe(false);
    expect(isNoSpace('exited with code 1')).toBe(false);
    expect(await store.isFull()).toBe(false);
  });
});
