import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger, WorkerConfig } from '../../config/src';
import { ExperimentCatalog, type CatalogChanges } from './experiments/catalog';
import { describeGpuRequest, gpuRequestOf, type Experiment } from './experiments/experiment';
import { ExperimentsReloader } from './experiments/reloader';
import {
  GpuAllocator,
  resolveGpuDeviceInfo,
  type GpuDevice,
  type GpuInventory,
} from './gpu-allocator';
import { JobExecutor } from './job-executor';
import { JobLedger } from './job-ledger';
import { JobsService } from './jobs.service';
import { JobQueue } from './queue/bullmq.adapter';
import { JobRecordsRepository } from './queue/job-records.repository';
import { openRedis, type RedisBackend } from './queue/redis-connection';
import { DockerEngine, type ContainerEngine } from './runner/docker.engine';
import { DockerRunner, type DockerStatus } from './runner/docker.runner';
import { JobIsolation } from './runner/isolation';
import { HelperLauncher } from './runner/launcher';
import { ProcessRunner } from './runner/process.runner';
import type { Runner } from './runner/runner';
import { ResultsStore } from './store/results.store';

/** Knobs that are not (yet) environment variables; tests shorten them. */
export interface JobsOptions {
  /** SIGTERM → SIGKILL grace when a job is stopped. */
  killGraceMs: number;
  /** How often the retention sweep runs. */
  sweepIntervalMs: number;
  /** GPU detection and health (from the health monitor); without it GPU_DEVICES is taken as given. */
  gpuInventory?: GpuInventory;
  /** The engine the Docker runner uses; DOCKER_HOST's by default (tests wrap it to look inside). */
  dockerEngine?: ContainerEngine;
}

export const DEFAULT_JOBS_OPTIONS: JobsOptions = {
  killGraceMs: 10_000,
  sweepIntervalMs: 60 * 60 * 1000,
};

/**
 * What /health/ready reports of the Docker Engine; `required` when an experiment runs in Docker,
 * `experiments` names those.
 */
export type DockerReadiness = DockerStatus & { required: boolean; experiments?: string[] };

/**
 * Everything the job system holds, started in order (experiments, Redis, queue, workers) and
 * stopped in reverse. Started before the API listens, so the API is ready only when the queue is.
 */
export class JobsRuntime {
  private sweepTimer?: NodeJS.Timeout;
  private drained?: Promise<void>;
  private closing = false;
  private reloader?: ExperimentsReloader;

  private constructor(
    readonly catalog: ExperimentCatalog,
    readonly store: ResultsStore,
    readonly records: JobRecordsRepository,
    readonly queue: JobQueue,
    readonly executor: JobExecutor,
    readonly service: JobsService,
    readonly gpus: GpuAllocator,
    readonly options: JobsOptions,
    /** MAX_UPLOAD: the files of one submission together; past it POST /jobs answers 413. */
    readonly maxUploadBytes: number,
    private readonly runners: Map<string, Runner>,
    private readonly docker: DockerRunner,
    private readonly isolation: JobIsolation,
    private readonly backend: RedisBackend,
    private readonly log: Logger,
  ) {}

  /** Where the job system's Redis is, password hidden: REDIS_URL, or the embedded server's socket. */
  get redisUrl(): string {
    return this.backend.describe;
  }

  get uploadDir(): string {
    return path.join(this.store.root, '.uploads');
  }

  static async start(
    config: WorkerConfig,
    log: Logger,
    opts: Partial<JobsOptions> = {},
  ): Promise<JobsRuntime> {
    const options = { ...DEFAULT_JOBS_OPTIONS, ...opts };
    // Experiments first: a bad file stops the worker before anything else starts.
    const catalog = await ExperimentCatalog.load(config.experimentsDir);
    const store = new ResultsStore(config.dataFolder);
    mkdirSync(path.join(store.root, '.uploads'), { recursive: true });
    const backend = await openRedis(config.redisUrl, config.dataFolder, log);
    const records = new JobRecordsRepository(backend, log);
    await records.init();
    const queue = new JobQueue(backend, log, config.resultsTtlMs);
    await queue.waitUntilReady();
    const inventory = options.gpuInventory;
    const devices = await resolveGpuDeviceInfo(config.gpuDevices, inventory, (msg) =>
      log.warn(msg),
    );
    const gpus = new GpuAllocator(
      devices,
      config.gpuSlotsPerDevice,
      inventory ? (id) => inventory.isHealthy(id) : undefined,
    );
    const docker = new DockerRunner({
      engine: options.dockerEngine ?? new DockerEngine(config.dockerHost),
      host: config.dockerHost,
      workerName: config.workerName,
      killGraceMs: options.killGraceMs,
      log,
      // A container that finished while no worker watched: its job succeeded, not run again.
      onExitedOk: (job, experiment) => store.markExitedOk(experiment, job),
    });
    const isolation = startIsolation(config, catalog, log);
    const processRunner = new ProcessRunner({
      killGraceMs: options.killGraceMs,
      launcher: new HelperLauncher(),
      isolation,
    });
    const runners = new Map<string, Runner>([
      ['process', processRunner],
      ['docker', docker],
    ]);
    const ledger = new JobLedger(records, store, log);
    const executor = new JobExecutor({
      catalog,
      ledger,
      records,
      store,
      runners,
      gpus,
      workerName: config.workerName,
      user: config.jobUser,
      log,
    });
    const service = new JobsService({
      catalog,
      ledger,
      records,
      queue,
      store,
      gpuRefusal: (exp) => gpuRefusal(exp, gpus, config.workerName),
      minFreeDisk: config.minFreeDisk,
      resultsTtlMs: config.resultsTtlMs,
      log,
    });
    const rt = new JobsRuntime(
      catalog,
      store,
      records,
      queue,
      executor,
      service,
      gpus,
      options,
      config.maxUploadBytes,
      runners,
      docker,
      isolation,
      backend,
      log,
    );
    // Containers and job cgroups first (stopped and removed), then the records: a job handed
    // back by recoverOrphans can never meet its old container or processes still running.
    await rt.reconcileContainers(catalog);
    const leftovers = await processRunner.reconcile();
    if (leftovers) {
      log.warn({ cgroups: leftovers }, 'killed the processes of jobs left by a previous run');
    }
    await service.recoverOrphans(config.workerName);
    queue.startWorker('cpu', config.workerConcurrency, executor.process);
    if (gpus.capacity > 0) queue.startWorker('gpu', gpus.capacity, executor.process);
    // MIG re-partitions (and GPUs lost or back) reach the allocator while the worker runs.
    inventory?.watch?.((d) => rt.devicesChanged(d));
    rt.sweepTimer = setInterval(() => {
      service
        .sweep()
        .catch((err: Error) => log.warn({ err: err.message }, 'retention sweep failed'));
    }, options.sweepIntervalMs);
    rt.sweepTimer.unref();
    await service.sweep();
    // From now on EXPERIMENTS_DIR is followed: changes are read without a restart.
    rt.reloader = new ExperimentsReloader({
      dir: config.experimentsDir,
      catalog,
      log,
      note: (exp) => {
        const why = exp.gpus > 0 ? gpuRefusal(exp, gpus, config.workerName) : undefined;
        return why && `${why}: its submissions to this worker get 400`;
      },
    });
    rt.reloader.watch();
    // What changed while the worker was starting (after the reading above), read once now.
    void rt.reloader.reload('start-up', true);
    log.info(
      {
        experiments: catalog.list().map((e) => e.name),
        redis: backend.describe,
        cpuSlots: config.workerConcurrency,
        gpus: gpus.devices,
      },
      'job queue ready',
    );
    return rt;
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
    return { ...(await this.docker.status()), required: experiments.length > 0, experiments };
  }

  /**
   * Removes this worker's leftover job containers (its previous run died; containers outlive it).
   * Docker unreachable now: done as soon as it answers, before any Docker job starts.
   */
  private async reconcileContainers(catalog: ExperimentCatalog): Promise<void> {
    const status = await this.docker.status();
    if (status.reachable) {
      try {
        await this.docker.reconcile();
        return;
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'leftover job containers not checked yet');
      }
    } else if (catalog.list().some((e) => e.runner === 'docker')) {
      this.log.warn({ reason: status.reason }, 'Docker jobs wait until Docker answers');
    }
    this.docker.reconcileLater();
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

  /** Running jobs are stopped and handed back to the queue; then queue, Redis. */
  async close(): Promise<void> {
    this.closing = true;
    this.reloader?.close();
    clearInterval(this.sweepTimer);
    this.executor.stopAll();
    await this.queue.closeWorkers(false);
    this.executor.dispose();
    await this.queue.close();
    for (const r of this.runners.values()) r.close?.();
    this.isolation.close();
    await this.records.close();
    await this.backend.stop();
    this.log.info('job queue stopped');
  }
}

/**
 * How process jobs are kept together on this host, said once at start: a cgroup per job, or
 * the /proc fallback (with why no cgroup could be made); and a warning when they run as root.
 */
function startIsolation(
  config: WorkerConfig,
  catalog: ExperimentCatalog,
  log: Logger,
): JobIsolation {
  const isolation = JobIsolation.detect({
    workerName: config.workerName,
    dataFolder: config.dataFolder,
  });
  const processJobs = catalog.list().some((e) => e.runner === 'process');
  if (isolation.mode === 'proc' && processJobs) {
    log.warn({ isolation: isolation.describe() }, 'process jobs: no cgroup per job');
  } else {
    log.info({ isolation: isolation.describe() }, 'process jobs: isolation');
  }
  if (processJobs && config.jobUser.uid === 0) {
    log.warn(
      "process jobs run as root (the daemon's user, JOB_UID unset): set JOB_UID=uid:gid to run them as another user",
    );
  }
  return isolation;
}

/** The 400 of a submission no device of this worker could ever run, naming what it has. */
function gpuRefusal(exp: Experiment, gpus: GpuAllocator, worker: string): string | undefined {
  if (gpus.capacity === 0) {
    return `experiment '${exp.name}' needs ${exp.gpus} GPU(s) and this worker has none (GPU_DEVICES)`;
  }
  const why = gpus.refusal(gpuRequestOf(exp));
  return why && `experiment '${exp.name}' needs ${describeGpuRequest(exp)}: ${why} (${worker})`;
}
