import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger, WorkerConfig } from '../../config/src';
import { loadExperiments, type ExperimentCatalog } from './experiments/experiment';
import { GpuAllocator } from './gpu-allocator';
import { JobExecutor } from './job-executor';
import { JobsService } from './jobs.service';
import { JobQueue } from './queue/bullmq.adapter';
import { JobRecordsRepository } from './queue/job-records.repository';
import { openRedis, type RedisBackend } from './queue/redis-connection';
import { HelperLauncher } from './runner/launcher';
import { ProcessRunner } from './runner/process.runner';
import type { Runner } from './runner/runner';
import { ResultsStore } from './store/results.store';

/** Knobs that are not (yet) environment variables; tests shorten them. */
export interface JobsOptions {
  /** SIGTERM → SIGKILL grace when a job is stopped. */
  killGraceMs: number;
  /** Largest uploaded input file; past it POST /jobs answers 413. */
  maxUploadBytes: number;
  /** How often the retention sweep runs. */
  sweepIntervalMs: number;
}

export const DEFAULT_JOBS_OPTIONS: JobsOptions = {
  killGraceMs: 10_000,
  maxUploadBytes: 1024 * 1024 * 1024,
  sweepIntervalMs: 60 * 60 * 1000,
};

/** GPU ids this worker hands out. `all` means none until GPU detection lands (next issue). */
export function gpuIds(config: WorkerConfig): string[] {
  return config.gpuDevices.kind === 'list' ? [...config.gpuDevices.ids] : [];
}

/**
 * Everything the job system holds, started in order (experiments, Redis, queue, workers) and
 * stopped in reverse. Started before the API listens, so the API is ready only when the queue is.
 */
export class JobsRuntime {
  private sweepTimer?: NodeJS.Timeout;

  private constructor(
    readonly catalog: ExperimentCatalog,
    readonly store: ResultsStore,
    readonly records: JobRecordsRepository,
    readonly queue: JobQueue,
    readonly executor: JobExecutor,
    readonly service: JobsService,
    readonly gpus: GpuAllocator,
    readonly options: JobsOptions,
    private readonly runners: Map<string, Runner>,
    private readonly backend: RedisBackend,
    private readonly log: Logger,
  ) {}

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
    const catalog = loadExperiments(config.experimentsDir);
    const store = new ResultsStore(config.dataFolder);
    mkdirSync(path.join(store.root, '.uploads'), { recursive: true });
    const backend = await openRedis(config.redisUrl, config.dataFolder, log);
    const records = new JobRecordsRepository(backend, log);
    await records.init();
    const queue = new JobQueue(backend, log, config.resultsTtlMs);
    await queue.waitUntilReady();
    const gpus = new GpuAllocator(gpuIds(config), config.gpuSlotsPerDevice);
    const runners = new Map<string, Runner>([
      [
        'process',
        new ProcessRunner({ killGraceMs: options.killGraceMs, launcher: new HelperLauncher() }),
      ],
    ]);
    const executor = new JobExecutor({
      catalog,
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
      records,
      queue,
      store,
      gpuCapacity: gpus.capacity,
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
      runners,
      backend,
      log,
    );
    await service.recoverOrphans(config.workerName);
    queue.startWorker('cpu', config.workerConcurrency, executor.process);
    if (gpus.capacity > 0) queue.startWorker('gpu', gpus.capacity, executor.process);
    rt.sweepTimer = setInterval(() => {
      service
        .sweep()
        .catch((err: Error) => log.warn({ err: err.message }, 'retention sweep failed'));
    }, options.sweepIntervalMs);
    rt.sweepTimer.unref();
    await service.sweep();
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

  /** Running jobs are stopped and handed back to the queue; then queue, Redis. */
  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    this.executor.stopAll();
    await this.queue.closeWorkers(false);
    this.executor.dispose();
    await this.queue.close();
    for (const r of this.runners.values()) r.close?.();
    await this.records.close();
    await this.backend.stop();
    this.log.info('job queue stopped');
  }
}
