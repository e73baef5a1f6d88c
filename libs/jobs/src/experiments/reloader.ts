import { statSync, watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Logger } from '../../../config/src';
import { describeProblem, type CatalogChanges, type ExperimentCatalog } from './catalog';
import type { Experiment } from './experiment';
import { scanExperimentsDir } from './experiment-files';

const nothing = (): CatalogChanges => ({ added: [], changed: [], removed: [], problems: [] });

export interface ReloaderOptions {
  dir: string;
  catalog: ExperimentCatalog;
  log: Logger;
  /** A warning about a new or changed experiment (its GPUs cannot be had here), or undefined. */
  note?(exp: Experiment): string | undefined;
  /** How long the folder must be quiet after a change before it is read (an editor's save is several events). */
  debounceMs?: number;
  /** How often a lost watch (the folder gone, no inotify watch left) is tried again. */
  rewatchMs?: number;
}

/**
 * Keeps the catalog in step with EXPERIMENTS_DIR while the worker runs: `reload()` reads the
 * folder again (SIGHUP calls it), and `watch()` calls it by itself when the folder changes
 * (inotify through fs.watch, debounced). One reading runs at a time; a change during one is read
 * by one more reading right after it, so the last change is never missed.
 */
export class ExperimentsReloader {
  private watcher?: FSWatcher;
  /** The folder the watch is on (device and inode): another folder put at the path is re-watched. */
  private watched?: string;
  private debounce?: NodeJS.Timeout;
  private rewatch?: NodeJS.Timeout;
  private running?: Promise<CatalogChanges>;
  private queued?: Promise<CatalogChanges>;
  private watchLost?: string;
  private closed = false;

  constructor(private readonly o: ReloaderOptions) {}

  /**
   * Reads EXPERIMENTS_DIR and applies it to the catalog, logging each change and each file it
   * cannot use (a warning naming the file and what is wrong). Never rejects.
   */
  reload(trigger: string, quiet = false): Promise<CatalogChanges> {
    if (!this.running) {
      this.running = this.readOnce(trigger, quiet)
        .catch((err: Error) => {
          // Never a rejection (the watch and SIGHUP call this without waiting): said, and the
          // catalog stays as it was.
          this.o.log.error({ err: err.message, trigger }, 'experiments: reading the folder failed');
          return nothing();
        })
        .finally(() => (this.running = undefined));
      return this.running;
    }
    // A reading under way may have listed the folder before this change: one more follows it,
    // shared by every call that comes meanwhile.
    this.queued ??= this.running.then(() => {
      this.queued = undefined;
      return this.reload(trigger);
    });
    return this.queued;
  }

  /** One reading; `quiet`: the summary line only when something changed or is wrong. */
  private async readOnce(trigger: string, quiet: boolean): Promise<CatalogChanges> {
    const scan = await scanExperimentsDir(this.o.dir);
    if (this.closed) return nothing();
    const changes = this.o.catalog.apply(scan);
    const { log } = this.o;
    for (const name of changes.added) log.info({ experiment: name, trigger }, 'experiment added');
    for (const name of changes.changed) {
      log.info(
        { experiment: name, trigger },
        'experiment changed: new submissions and every try that starts from now on use the new version',
      );
    }
    for (const name of changes.removed) {
      log.info(
        { experiment: name, trigger },
        'experiment removed: new submissions get 404; running jobs go on',
      );
    }
    for (const p of changes.problems) {
      log.warn({ file: p.file, experiment: p.experiment, kept: p.kept }, describeProblem(p));
    }
    for (const name of [...changes.added, ...changes.changed]) {
      const exp = this.o.catalog.get(name);
      const note = exp && this.o.note?.(exp);
      if (note) log.warn({ experiment: name }, note);
    }
    const { added, changed, removed, problems } = changes;
    if (quiet && added.length + changed.length + removed.length + problems.length === 0) {
      return changes;
    }
    log.info(
      {
        trigger,
        experiments: this.o.catalog.list().map((e) => e.name),
        added: changes.added,
        changed: changes.changed,
        removed: changes.removed,
        problems: changes.problems.length,
      },
      'experiments reloaded',
    );
    return changes;
  }

  /**
   * Watches EXPERIMENTS_DIR: a change is read once the folder has been quiet for `debounceMs`.
   * inotify sees changes made on this host only (not another NFS client's): SIGHUP covers those.
   * A watch that cannot be set up or is lost is tried again every `rewatchMs`, said once.
   */
  watch(): void {
    if (this.closed || this.watcher) return;
    try {
      this.watcher = watch(this.o.dir, { persistent: false }, () => this.changed());
      this.watcher.on('error', (err) => this.lost(err.message));
    } catch (err) {
      this.lost((err as Error).message);
      return;
    }
    this.watched = folderIdSync(this.o.dir);
    if (this.watchLost !== undefined) {
      this.watchLost = undefined;
      this.o.log.info({ dir: this.o.dir }, 'experiments: watching the folder again');
      // Whatever changed while no watch was on is read now.
      void this.reload('file watch back');
    }
  }

  private changed(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.afterChange(), this.o.debounceMs ?? 250);
    this.debounce.unref();
  }

  private async afterChange(): Promise<void> {
    if (this.closed) return;
    await this.reload('file change');
    // The folder moved away or was replaced (a new mount, `mv new experiments`): the watch
    // follows the old one, so it is set up again on whatever is at the path now.
    const id = await this.folderId();
    if (!this.closed && this.watcher && id !== this.watched) {
      this.lost(id ? 'the folder was replaced' : 'the folder is gone');
    }
  }

  private lost(why: string): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.closed) return;
    if (this.watchLost === undefined) {
      this.o.log.warn(
        { dir: this.o.dir },
        `experiments: no file watch on ${this.o.dir} (${why}): trying again every ` +
          `${(this.o.rewatchMs ?? 5000) / 1000} s; SIGHUP reloads the experiments meanwhile`,
      );
    }
    this.watchLost = why;
    clearTimeout(this.rewatch);
    this.rewatch = setTimeout(() => this.watch(), this.o.rewatchMs ?? 5000);
    this.rewatch.unref();
  }

  private async folderId(): Promise<string | undefined> {
    return stat(this.o.dir).then(
      (st) => `${st.dev}:${st.ino}`,
      () => undefined,
    );
  }

  /** Stops the watch; a reading under way then changes nothing. */
  close(): void {
    this.closed = true;
    clearTimeout(this.debounce);
    clearTimeout(this.rewatch);
    this.watcher?.close();
    this.watcher = undefined;
  }
}

function folderIdSync(dir: string): string | undefined {
  try {
    const st = statSync(dir);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}
