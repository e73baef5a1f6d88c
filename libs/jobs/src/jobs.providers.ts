import { mkdirSync } from 'node:fs';
import { getQueueToken } from '@nestjs/bullmq';
import type { FactoryProvider, InjectionToken } from '@nestjs/common';
import { LOGGER, WORKER_CONFIG, type Logger, type WorkerConfig } from '../../config/src';
import { ExperimentCatalog } from './experiments/catalog';
import { describeGpuRequest, gpuRequestOf, type Experiment } from './experiments/experiment';
import { GpuAllocator, resolveGpuDeviceInfo } from './gpu-allocator';
import { JobExecutor } from './job-executor';
import { JobLedger } from './job-ledger';
import { JobsService } from './jobs.service';
import { JobQueue, QUEUE_NAME, type BullQueue } from './queue/bullmq.adapter';
import { JobRecordsRepository } from './queue/job-records.repository';
import { openRedis, type RedisBackend } from './queue/redis-connection';
import { DockerEngine, type ContainerEngine } from './runner/docker.engine';
import { DockerRunner } from './runner/docker.runner';
import { JobIsolation } from './runner/isolation';
import { HelperLauncher } from './runner/launcher';
import { ProcessRunner } from './runner/process.runner';
import type { Runner } from './runner/runner';
import type { GpuInventory } from './gpu-allocator';
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

/** The JobsOptions the module was given, defaults filled in. */
export const JOBS_OPTIONS = Symbol('JOBS_OPTIONS');
/** The Redis the job system uses (RedisBackend): REDIS_URL's, or the embedded redis-server. */
export const REDIS_BACKEND = Symbol('REDIS_BACKEND');
/** The runners by experiment `runner:` name (`Map<string, Runner>`): process, docker. */
export const RUNNERS = Symbol('RUNNERS');

/**
 * A provider made by `useFactory` from `inject`, started only once each of `after` has been:
 * Nest makes a module's providers concurrently, each as soon as what it injects is ready, so
 * the start order that matters (the experiments before Redis: a bad file stops the worker
 * before it starts a redis-server; Redis, the records and the queue before anything that
 * touches the host) is said by these extra dependencies, whose values the factory ignores.
 */
function provider<T>(
  provide: InjectionToken,
  inject: InjectionToken[],
  factory: (...deps: never[]) => T | Promise<T>,
  after: InjectionToken[] = [],
): FactoryProvider<T> {
  return {
    provide,
    inject: [...inject, ...after],
    useFactory: factory as FactoryProvider<T>['useFactory'],
  };
}

/** The 400 of a submission no device of this worker could ever run, naming what it has. */
export function gpuRefusal(
  exp: Experiment,
  gpus: GpuAllocator,
  worker: string,
): string | undefined {
  if (gpus.capacity === 0) {
    return `experiment '${exp.name}' needs ${exp.gpus} GPU(s) and this worker has none (GPU_DEVICES)`;
  }
  const why = gpus.refusal(gpuRequestOf(exp));
  return why && `experiment '${exp.name}' needs ${describeGpuRequest(exp)}: ${why} (${worker})`;
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

/**
 * What the queues are made after (JobsBaseModule, imported by JobsModule and by
 * `BullModule.forRootAsync`, whose connection is REDIS_BACKEND's): the experiments, the results
 * store, Redis, the records, in the order they start.
 */
export const JOBS_BASE_PROVIDERS: FactoryProvider[] = [
  // Experiments first: a bad file stops the worker before anything else starts.
  provider(ExperimentCatalog, [WORKER_CONFIG], (config: WorkerConfig) =>
    ExperimentCatalog.load(config.experimentsDir),
  ),
  provider(
    ResultsStore,
    [WORKER_CONFIG, LOGGER],
    async (config: WorkerConfig, log: Logger) => {
      const store = new ResultsStore(config.dataFolder, config.workerName);
      mkdirSync(store.uploadDir, { recursive: true });
      const removed = await store.sweepUploads();
      if (removed.own + removed.stale > 0)
        log.info(
          { ...removed, dir: store.uploadDir },
          'removed uploads left by submissions an earlier run did not finish',
        );
      return store;
    },
    [ExperimentCatalog],
  ),
  provider(
    REDIS_BACKEND,
    [WORKER_CONFIG, LOGGER],
    (config: WorkerConfig, log: Logger) => openRedis(config.redisUrl, config.dataFolder, log),
    [ResultsStore],
  ),
  provider(
    JobRecordsRepository,
    [REDIS_BACKEND, LOGGER],
    async (backend: RedisBackend, log: Logger) => {
      const records = new JobRecordsRepository(backend, log);
      await records.init();
      return records;
    },
  ),
];

/**
 * The rest of the job system's providers (JobsModule's), in the order they start (each after
 * the one above it where it says so), after JOBS_BASE_PROVIDERS and the two BullMQ queues that
 * `BullModule.registerQueue` makes. JobsRuntime (jobs.runtime.ts) then reconciles, recovers and
 * starts the queue workers.
 */
export const JOBS_PROVIDERS: FactoryProvider[] = [
  // The queues registered through BullModule, under their Nest tokens; ready before the host.
  provider(
    JobQueue,
    [
      getQueueToken(QUEUE_NAME.cpu),
      getQueueToken(QUEUE_NAME.gpu),
      REDIS_BACKEND,
      LOGGER,
      WORKER_CONFIG,
    ],
    async (
      cpu: BullQueue,
      gpu: BullQueue,
      backend: RedisBackend,
      log: Logger,
      config: WorkerConfig,
    ) => {
      const queue = new JobQueue({ cpu, gpu }, backend, log, config.resultsTtlMs);
      await queue.waitUntilReady();
      return queue;
    },
    [JobRecordsRepository],
  ),
  provider(
    GpuAllocator,
    [WORKER_CONFIG, JOBS_OPTIONS, LOGGER],
    async (config: WorkerConfig, options: JobsOptions, log: Logger) => {
      const inventory = options.gpuInventory;
      const devices = await resolveGpuDeviceInfo(config.gpuDevices, inventory, (msg) =>
        log.warn(msg),
      );
      return new GpuAllocator(
        devices,
        config.gpuSlotsPerDevice,
        inventory ? (id) => inventory.isHealthy(id) : undefined,
      );
    },
    [JobQueue],
  ),
  provider(
    DockerRunner,
    [WORKER_CONFIG, JOBS_OPTIONS, LOGGER, ResultsStore],
    (config: WorkerConfig, options: JobsOptions, log: Logger, store: ResultsStore) =>
      new DockerRunner({
        engine: options.dockerEngine ?? new DockerEngine(config.dockerHost),
        host: config.dockerHost,
        workerName: config.workerName,
        killGraceMs: options.killGraceMs,
        log,
        // A container that finished while no worker watched: its job succeeded, not run again.
        onExitedOk: (job, experiment) => store.markExitedOk(experiment, job),
      }),
    [GpuAllocator],
  ),
  provider(
    JobIsolation,
    [WORKER_CONFIG, ExperimentCatalog, LOGGER],
    (config: WorkerConfig, catalog: ExperimentCatalog, log: Logger) =>
      startIsolation(config, catalog, log),
    [DockerRunner],
  ),
  provider(
    ProcessRunner,
    [JOBS_OPTIONS, JobIsolation],
    (options: JobsOptions, isolation: JobIsolation) =>
      new ProcessRunner({
        killGraceMs: options.killGraceMs,
        launcher: new HelperLauncher(),
        isolation,
      }),
  ),
  provider(
    RUNNERS,
    [ProcessRunner, DockerRunner],
    (process: ProcessRunner, docker: DockerRunner) =>
      new Map<string, Runner>([
        ['process', process],
        ['docker', docker],
      ]),
  ),
  provider(
    JobLedger,
    [JobRecordsRepository, ResultsStore, LOGGER],
    (records: JobRecordsRepository, store: ResultsStore, log: Logger) =>
      new JobLedger(records, store, log),
  ),
  provider(
    JobExecutor,
    [
      WORKER_CONFIG,
      LOGGER,
      ExperimentCatalog,
      JobLedger,
      JobRecordsRepository,
      ResultsStore,
      RUNNERS,
      GpuAllocator,
    ],
    (
      config: WorkerConfig,
      log: Logger,
      catalog: ExperimentCatalog,
      ledger: JobLedger,
      records: JobRecordsRepository,
      store: ResultsStore,
      runners: Map<string, Runner>,
      gpus: GpuAllocator,
    ) =>
      new JobExecutor({
        catalog,
        ledger,
        records,
        store,
        runners,
        gpus,
        workerName: config.workerName,
        user: config.jobUser,
        log,
      }),
  ),
  provider(
    JobsService,
    [
      WORKER_CONFIG,
      LOGGER,
      ExperimentCatalog,
      JobLedger,
      JobRecordsRepository,
      JobQueue,
      ResultsStore,
      GpuAllocator,
    ],
    (
      config: WorkerConfig,
      log: Logger,
      catalog: ExperimentCatalog,
      ledger: JobLedger,
      records: JobRecordsRepository,
      queue: JobQueue,
      store: ResultsStore,
      gpus: GpuAllocator,
    ) =>
      new JobsService({
        catalog,
        ledger,
        records,
        queue,
        store,
        gpuRefusal: (exp) => gpuRefusal(exp, gpus, config.workerName),
        minFreeDisk: config.minFreeDisk,
        resultsTtlMs: config.resultsTtlMs,
        log,
      }),
    [RUNNERS],
  ),
];
