import type { OnApplicationShutdown } from '@nestjs/common';
import type { Logger, WorkerConfig } from '../../config/src';
import { ExperimentCatalog, type CatalogChanges } from './experiments/catalog';
import { ExperimentsReloader } from './experiments/reloader';
import { GpuAllocator, type GpuDevice } from './gpu-allocator';
import { JobExecutor } from './job-executor';
import { gpuRefusal, type JobsOptions } from './jobs.providers';
import { JobsService } from './jobs.service';
import { JobQueue } from './queue/bullmq.adapter';
import { JobRecordsRepository } from './queue/job-records.repository';
import type { RedisBackend } from './queue/redis-connection';
import { DockerRunner, type DockerStatus } from './runner/docker.runner';
import { JobIsolation } from './runner/isolation';
import { ProcessRunner } from './runner/process.runner';
import type { Runner } from './runner/runner';
import { ResultsStore } from './store/results.store';

/**
 * What /health/ready reports of the Docker Engine; `required` when an experiment runs in Docker,
 * `experiments` names those.
 */
export type DockerReadiness = DockerStatus & { required: boolean; experiments?: string[] };

/** What JobsRuntime runs and stops: the job system's providers (jobs.providers.ts). */
export interface JobsRuntimeDeps {
  config: WorkerConfig;
  options: JobsOptions;
  log: Logger;
  catalog: ExperimentCatalog;
  store: ResultsStore;
  backend: RedisBackend;
  records: JobRecordsRepository;
  queue: JobQueue;
  gpus: GpuAllocator;
  docker: DockerRunner;
  isolation: JobIsolation;
  processRunner: ProcessRunner;
  runners: Map<string, Runner>;
  executor: JobExecutor;
  service: JobsService;
}

/**
 * The job system's life: once its providers are made (experiments, Redis, queue, runners,
 * executor, service: jobs.providers.ts), `start` reconciles what a previous run left, starts
 * the queue workers, the retention sweep and the EXPERIMENTS_DIR watch; `drain` and `close` stop
 * them, `close` in reverse order of the start. One class because Nest runs the shutdown hooks of
 * one module's providers concurrently, and the job system must stop in order.
 */
export class JobsRuntime implements OnApplicationShutdown {
  readonly catalog: ExperimentCatalog;
  readonly store: ResultsStore;
  readonly records: JobRecordsRepository;
  readonly queue: JobQueue;
  readonly executor: JobExecutor;
  readonly service: JobsService;
  readonly gpus: GpuAllocator;
  readonly options: JobsOptions;
  private readonly log: Logger;
  private sweepTimer?: NodeJS.Timeout;
  private drained?: Promise<void>;
  private closing = false;
  private closed?: Promise<void>;
  private reloader?: ExperimentsReloader;

  constructor(private readonly d: JobsRuntimeDeps) {
    ({
      catalog: this.catalog,
      store: this.store,
      records: this.records,
      queue: this.queue,
      executor: this.executor,
      service: this.service,
      gpus: this.gpus,
      options: this.options,
      log: this.log,
    } = d);
  }

  /** Where the job system's Redis is, password hidden: REDIS_URL, or the embedded server's socket. */
  get redisUrl(): string {
    return this.d.backend.describe;
  }

  /** Stops the job system when the app closes (app.close() on SIGTERM). */
  async onApplicationShutdown(): Promise<void> {
    await this.close();
  }

  /**
   * Starts what runs once the providers are made: leftovers reconciled, orphans recovered, the
   * queue workers, the sweep, the EXPERIMENTS_DIR watch. Awaited by the JobsRuntime provider, so
   * the API listens only once the queue takes jobs.
   */
  async start(): Promise<void> {
    const { config, catalog, service, queue, executor, gpus, log } = this.d;
    // Containers and job cgroups first (stopped and removed), then the records: a job handed
    // back by recoverOrphans can never meet its old container or processes still running.
    await this.reconcileContainers(catalog);
    const leftovers = await this.d.processRunner.reconcile();
    if (leftovers) {
      log.warn({ cgroups: leftovers }, 'killed the processes of jobs left by a previous run');
    }
    await service.recoverOrphans(config.workerName);
    queue.startWorker('cpu', config.workerConcurrency, executor.process);
    if (gpus.capacity > 0) queue.startWorker('gpu', gpus.capacity, executor.process);
    // MIG re-partitions (and GPUs lost or back) reach the allocator while the worker runs.
    this.options.gpuInventory?.watch?.((d) => this.devicesChanged(d));
    this.sweepTimer = setInterval(() => {
      service
        .sweep()
        .catch((err: Error) => log.warn({ err: err.message }, 'retention sweep failed'));
    }, this.options.sweepIntervalMs);
    this.sweepTimer.unref();
    // Not awaited: a sweep can take minutes (a job folder of millions of files, a chain of
    // folders thousands deep), and whatever it meets must never keep the worker from starting.
    service.sweep().catch((err: Error) => log.warn({ err: err.message }, 'retention sweep failed'));
    // From now on EXPERIMENTS_DIR is followed: changes are read without a restart.
    this.reloader = new ExperimentsReloader({
      dir: config.experimentsDir,
      catalog,
      log,
      note: (exp) => {
        const why = exp.gpus > 0 ? gpuRefusal(exp, gpus, config.workerName) : undefined;
        return why && `${why}: its submissions to this worker get 400`;
      },
    });
    this.reloader.watch();
    // What changed while the worker was starting (after the reading above), read once now.
    void this.reloader.reload('start-up', true);
    log.info(
      {
        experiments: catalog.list().map((e) => e.name),
        redis: this.d.backend.describe,
        cpuSlots: config.workerConcurrency,
        gpus: gpus.devices,
      },
      'job queue ready',
    );
  }

  /**
   * Reads EXPERIMENTS_DIR again (SIGHUP; the file watch does it by itself): new and changed valid
   * files take effect, a bad one is logged and the version loaded before stays, a removed one is
   * gone (docs/EXPERIMENTS.md). Resolves with what changed.
   */
  reloadExperiments(trigger: string): Promise<CatalogChanges> {
    if (!this.reloader || this.closing) {
      return Promise.resolve({ added: [], changed: [], removed: [], problems: [] });
    }
    return this.reloader.reload(trigger);
  }

  /**
   * The GPUs changed under the running worker: the allocator takes the new devices (new ones get
   * jobs at once, vanished ones none), jobs running on a vanished MIG instance fail with the
   * reason, and the GPU queue's concurrency follows the new number of slots.
   */
  devicesChanged(devices: GpuDevice[]): void {
    if (this.closing) return;
    const before = new Set(this.gpus.devices);
    const gone = this.gpus.update(devices);
    const added = devices.filter((d) => !before.has(d.uuid)).map((d) => d.uuid);
    if (gone.length === 0 && added.length === 0) return;
    this.log.warn({ added, gone: gone.map((d) => d.uuid) }, 'GPU devices changed');
    this.executor.devicesLost(gone.filter((d) => d.parent));
    const slots = this.gpus.capacity;
    if (this.queue.hasWorker('gpu')) this.queue.setConcurrency('gpu', slots);
    else if (slots > 0 && !this.drained)
      this.queue.startWorker('gpu', slots, this.executor.process);
  }

  /**
   * The Docker Engine as /health/ready needs it: reachable or why not, NVIDIA runtime, and whether
   * any installed experiment needs Docker at all. Cheap: the answer is reused for 3 s.
   */
  async dockerStatus(): Promise<DockerReadiness> {
    const experiments = this.catalog
      .list()
      .filter((e) => e.runner === 'docker')
      .map((e) => e.name);
    return { ...(await this.d.docker.status()), required: experiments.length > 0, experiments };
  }

  /**
   * Removes this worker's leftover job containers (its previous run died; containers outlive it).
   * Docker unreachable now: done as soon as it answers, before any Docker job starts.
   */
  private async reconcileContainers(catalog: ExperimentCatalog): Promise<void> {
    const status = await this.d.docker.status();
    if (status.reachable) {
      try {
        await this.d.docker.reconcile();
        return;
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'leftover job containers not checked yet');
      }
    } else if (catalog.list().some((e) => e.runner === 'docker')) {
      this.log.warn({ reason: status.reason }, 'Docker jobs wait until Docker answers');
    }
    this.d.docker.reconcileLater();
  }

  /**
   * Drains this worker (several GPU hosts: taking one out): its queue workers stop fetching jobs,
   * and this resolves once every job it was running has ended on its own. Queued jobs stay in
   * Redis for the other workers. close() afterwards stops the rest.
   */
  drain(): Promise<void> {
    this.drained ??= (async () => {
      this.log.info(
        { running: this.executor.active },
        'draining: taking no new job, letting the running ones finish',
      );
      // close(false) is BullMQ's graceful close: no new fetch, waits for the active jobs.
      await this.queue.closeWorkers(false);
      this.log.info('drained: no job running on this worker');
    })();
    return this.drained;
  }

  /** Running jobs are stopped and handed back to the queue; then queue, Redis. Once. */
  close(): Promise<void> {
    this.closing = true;
    this.closed ??= (async () => {
      this.reloader?.close();
      clearInterval(this.sweepTimer);
      this.d.service.stopSweeping();
      this.executor.stopAll();
      await this.queue.closeWorkers(false);
      this.executor.dispose();
      await this.queue.close();
      for (const r of this.d.runners.values()) r.close?.();
      this.d.isolation.close();
      await this.records.close();
      await this.d.backend.stop();
      this.log.info('job queue stopped');
    })();
    return this.closed;
  }
}
