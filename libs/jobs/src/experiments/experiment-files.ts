import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readdirSync,
  readSync,
  statSync,
  type Stats,
} from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ValidateFunction } from 'ajv';
import {
  compileParams,
  experimentFrom,
  ExperimentFileError,
  notYaml,
  parseExperiment,
  type Experiment,
} from './experiment';
import { YamlThread } from './yaml-thread';

/** The most an experiment file may hold: real ones are a few KiB; a reload never reads more. */
export const MAX_EXPERIMENT_FILE_BYTES = 1024 * 1024;

/**
 * Which names in EXPERIMENTS_DIR are experiment files: `*.yaml` and `*.yml`, except names that
 * start with a dot, which editors and tools use for their own files while one is edited (Emacs's
 * `.#train.yaml` lock link, a `.train.yaml.tmp` written before a rename, Kubernetes' `..data`).
 * Such a name could never be an experiment anyway: a name must match its file, without a dot.
 */
export function isExperimentFileName(name: string): boolean {
  return /\.ya?ml$/.test(name) && !name.startsWith('.');
}

/** One experiment file as read: the experiment it defines, or what is wrong with it. */
export interface ScannedFile {
  file: string;
  /** The experiment the file is for: its name without `.yaml`/`.yml` (the `name` must match). */
  name: string;
  experiment?: Experiment;
  validate?: ValidateFunction;
  /** The experiment as JSON: equal means unchanged. */
  json?: string;
  error?: ExperimentFileError;
}

/** EXPERIMENTS_DIR read once: every experiment file, or why the folder itself could not be read. */
export interface FolderScan {
  dir: string;
  files: ScannedFile[];
  error?: ExperimentFileError;
}

const bigFile = (file: string) =>
  new ExperimentFileError(file, '', `is larger than ${MAX_EXPERIMENT_FILE_BYTES} bytes`);

/**
 * Why a file may be read: only a regular file is opened. A FIFO named `x.yaml` would block the
 * open (a libuv thread, or at start the whole worker) until a writer comes, and a device (a link
 * to /dev/zero) never ends; links are followed, so a file linked in from elsewhere is read.
 */
function notRegular(file: string, st: Stats): ExperimentFileError | undefined {
  if (st.isFile()) return st.size > MAX_EXPERIMENT_FILE_BYTES ? bigFile(file) : undefined;
  const kind = st.isDirectory() ? 'a folder' : st.isFIFO() ? 'a FIFO' : 'not a regular file';
  return new ExperimentFileError(file, '', `is ${kind}: only regular files are read`);
}

/**
 * The open flags: O_NONBLOCK, so that a file swapped for a FIFO between the stat and the open
 * does not block the open either (it has no effect on a regular file), and the fstat after the
 * open checks again what was opened.
 */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK;

const unreadable = (file: string, err: unknown) =>
  err instanceof ExperimentFileError
    ? err
    : new ExperimentFileError(file, '', `cannot be read: ${(err as Error).message}`);

/** Checks a file (its text, or its parsed YAML) and compiles its params; any problem is its error. */
function checked(file: string, name: string, parse: () => Experiment): ScannedFile {
  try {
    const experiment = parse();
    const validate = compileParams(experiment);
    return { file, name, experiment, validate, json: JSON.stringify(experiment) };
  } catch (err) {
    return { file, name, error: unreadable(file, err) };
  }
}

const nameOf = (n: string) => n.replace(/\.ya?ml$/, '');

/**
 * Reads EXPERIMENTS_DIR without blocking the event loop (a reload while the worker serves jobs):
 * the folder and each file through libuv's threads, each file bounded to
 * MAX_EXPERIMENT_FILE_BYTES, only regular files opened, the YAML parsed in a thread of its own
 * within a time and memory bound (yaml-thread.ts).
 */
export async function scanExperimentsDir(dir: string): Promise<FolderScan> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter(isExperimentFileName).sort();
  } catch (err) {
    return { dir, files: [], error: folderError(dir, err) };
  }
  const files: ScannedFile[] = [];
  const yaml = new YamlThread();
  try {
    for (const n of names) {
      const file = path.join(dir, n);
      let text: string;
      try {
        text = await readBounded(file);
      } catch (err) {
        files.push({ file, name: nameOf(n), error: unreadable(file, err) });
        continue;
      }
      const parsed = await yaml.parse(text);
      if ('doc' in parsed)
        files.push(checked(file, nameOf(n), () => experimentFrom(file, parsed.doc)));
      else {
        const error = parsed.notYaml
          ? notYaml(file, parsed.error)
          : new ExperimentFileError(file, '', parsed.error);
        files.push({ file, name: nameOf(n), error });
      }
    }
  } finally {
    await yaml.close();
  }
  return { dir, files };
}

async function readBounded(file: string): Promise<string> {
  const bad = notRegular(file, await stat(file));
  if (bad) throw bad;
  const fh = await open(file, OPEN_FLAGS);
  try {
    const again = notRegular(file, await fh.stat());
    if (again) throw again;
    const buf = Buffer.alloc(MAX_EXPERIMENT_FILE_BYTES + 1);
    let got = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, null);
      if (bytesRead === 0) break;
      got += bytesRead;
      if (got > MAX_EXPERIMENT_FILE_BYTES) throw bigFile(file);
    }
    return buf.subarray(0, got).toString('utf8');
  } finally {
    await fh.close();
  }
}

/**
 * The same as scanExperimentsDir, synchronously and parsing in this thread: for `gpu-sidecar
 * doctor` (a command that reads the folder once) and tests, never the daemon.
 */
export function scanExperimentsDirSync(dir: string): FolderScan {
  let names: string[];
  try {
    names = readdirSync(dir).filter(isExperimentFileName).sort();
  } catch (err) {
    return { dir, files: [], error: folderError(dir, err) };
  }
  const files = names.map((n): ScannedFile => {
    const file = path.join(dir, n);
    try {
      const text = readBoundedSync(file);
      return checked(file, nameOf(n), () => parseExperiment(file, text));
    } catch (err) {
      return { file, name: nameOf(n), error: unreadable(file, err) };
    }
  });
  return { dir, files };
}

function readBoundedSync(file: string): string {
  const bad = notRegular(file, statSync(file));
  if (bad) throw bad;
  const fd = openSync(file, OPEN_FLAGS);
  try {
    const again = notRegular(file, fstatSync(fd));
    if (again) throw again;
    const buf = Buffer.alloc(MAX_EXPERIMENT_FILE_BYTES + 1);
    let got = 0;
    for (;;) {
      const n = readSync(fd, buf, got, buf.length - got, null);
      if (n === 0) break;
      got += n;
      if (got > MAX_EXPERIMENT_FILE_BYTES) throw bigFile(file);
    }
    return buf.subarray(0, got).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

const folderError = (dir: string, err: unknown) =>
  new ExperimentFileError(dir, '', `cannot be read: ${(err as Error).message}`);
