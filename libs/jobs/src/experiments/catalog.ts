import type { ValidateFunction } from 'ajv';
import { describeAjvError, ExperimentFileError, type Experiment } from './experiment';
import { scanExperimentsDir, scanExperimentsDirSync, type FolderScan } from './experiment-files';

/** An experiment file that could not be used at the last reading of EXPERIMENTS_DIR. */
export interface ExperimentProblem {
  file: string;
  /** The experiment the file is for (its file name without `.yaml`), or the folder's path. */
  experiment: string;
  error: ExperimentFileError;
  /** An experiment of that name was installed before: that version stays in use. */
  kept: boolean;
  /** The folder itself could not be read: every experiment stays as it was. */
  folder?: boolean;
}

/** What one reading of EXPERIMENTS_DIR changed, by experiment name. */
export interface CatalogChanges {
  added: string[];
  changed: string[];
  removed: string[];
  /** Every file that could not be used (all of them, not only new ones). */
  problems: ExperimentProblem[];
}

interface Entry {
  exp: Experiment;
  validate: ValidateFunction;
  /** The parsed experiment as JSON: equal means unchanged. */
  json: string;
}

/** `kept` in words, for logs and /health. */
export function describeProblem(p: ExperimentProblem): string {
  const what = p.folder
    ? 'every experiment loaded before stays in use'
    : p.kept
      ? 'the version loaded before stays in use'
      : 'not loaded';
  return `${p.error.message} (${what})`;
}

/**
 * The installed experiments by name, each with its compiled params validator. One catalog lives
 * as long as the worker; `apply` replaces its contents with a new reading of EXPERIMENTS_DIR, so
 * whoever holds it (submissions, the executor, /experiments, /health) sees the current versions.
 * Rules (docs/EXPERIMENTS.md, "Adding and changing experiments while the worker runs"):
 * - a new or changed valid file: that version, for new submissions and for every try that
 *   starts from now on;
 * - a file that is wrong (or cannot be read): a problem; the version loaded before, if any, stays;
 * - two files for one name (`x.yaml` and `x.yml`): a problem, as at start; the old version stays;
 * - a file gone: the experiment is gone (404 for submissions; running jobs go on);
 * - the folder itself unreadable (gone, unmounted): a problem, and nothing changes, since an empty
 *   reading of a folder that went away would otherwise remove every experiment.
 */
export class ExperimentCatalog {
  private entries = new Map<string, Entry>();
  /** Each version's validator, so params are checked against the version a submission got. */
  private readonly validators = new WeakMap<Experiment, ValidateFunction>();
  private current: ExperimentProblem[] = [];

  list(): Experiment[] {
    return [...this.entries.values()]
      .map((e) => e.exp)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): Experiment | undefined {
    return this.entries.get(name)?.exp;
  }

  /** The files that could not be used at the last reading (empty when all are fine). */
  problems(): ExperimentProblem[] {
    return [...this.current];
  }

  /**
   * Checks params against the experiment's schema; returns the first problem, naming the field.
   * Given the Experiment itself, its own version's schema is used, even if the file changed since.
   */
  validateParams(
    exp: Experiment | string,
    params: unknown,
  ): { field: string; problem: string } | undefined {
    const validate =
      typeof exp === 'string' ? this.entries.get(exp)?.validate : this.validators.get(exp);
    if (!validate)
      throw new Error(`unknown experiment ${typeof exp === 'string' ? exp : exp.name}`);
    if (validate(params)) return undefined;
    return describeAjvError(validate.errors![0], 'params');
  }

  /** Takes a new reading of EXPERIMENTS_DIR, by the rules above; says what changed. */
  apply(scan: FolderScan): CatalogChanges {
    if (scan.error) {
      this.current = [
        { file: scan.dir, experiment: scan.dir, error: scan.error, kept: true, folder: true },
      ];
      return { added: [], changed: [], removed: [], problems: this.problems() };
    }
    const next = new Map<string, Entry>();
    const problems: ExperimentProblem[] = [];
    const byName = new Map<string, typeof scan.files>();
    for (const f of scan.files) byName.set(f.name, [...(byName.get(f.name) ?? []), f]);
    for (const [name, files] of byName) {
      const before = this.entries.get(name);
      const refuse = (file: string, error: ExperimentFileError) => {
        problems.push({ file, experiment: name, error, kept: before !== undefined });
        if (before) next.set(name, before);
      };
      const [first, second] = files;
      if (second) {
        const also = `'${name}' is not unique: ${first.file} is for it too`;
        refuse(second.file, new ExperimentFileError(second.file, 'name', also));
      } else if (first.error || !first.experiment || !first.validate || !first.json) {
        refuse(first.file, first.error ?? new ExperimentFileError(first.file, '', 'is invalid'));
      } else {
        const { experiment: exp, validate, json } = first;
        next.set(name, before?.json === json ? before : { exp, validate, json });
      }
    }
    const changes: CatalogChanges = {
      added: [...next.keys()].filter((n) => !this.entries.has(n)).sort(),
      changed: [...next.keys()]
        .filter((n) => this.entries.has(n) && this.entries.get(n) !== next.get(n))
        .sort(),
      removed: [...this.entries.keys()].filter((n) => !next.has(n)).sort(),
      problems,
    };
    for (const e of next.values()) this.validators.set(e.exp, e.validate);
    this.entries = next;
    this.current = problems;
    return changes;
  }

  /**
   * The catalog of EXPERIMENTS_DIR at start. Any problem throws (the first one): a worker does
   * not start with a file it cannot use, since a typo found at submit time would be found by a
   * visitor instead.
   */
  static async load(dir: string): Promise<ExperimentCatalog> {
    return ExperimentCatalog.strict(await scanExperimentsDir(dir));
  }

  private static strict(scan: FolderScan): ExperimentCatalog {
    const catalog = new ExperimentCatalog();
    const { problems } = catalog.apply(scan);
    if (problems.length > 0) throw problems[0].error;
    return catalog;
  }

  /** ExperimentCatalog.load, synchronously (`gpu-sidecar doctor`, tests). */
  static loadSync(dir: string): ExperimentCatalog {
    return ExperimentCatalog.strict(scanExperimentsDirSync(dir));
  }
}

/** Reads every experiment file in `dir`; any problem throws ExperimentFileError (see `load`). */
export function loadExperiments(dir: string): ExperimentCatalog {
  return ExperimentCatalog.loadSync(dir);
}
