import { BullModule, getSharedConfigToken, type RegisterQueueOptions } from '@nestjs/bullmq';
import { Module, type DynamicModule } from '@nestjs/common';
import { LOGGER, WORKER_CONFIG, type Logger, type WorkerConfig } from '../../config/src';
import { ExperimentsController } from './api/experiments.controller';
import { JobOutputController } from './api/job-output.controller';
import { JobsController } from './api/jobs.controller';
import { ExperimentCatalog } from './experiments/catalog';
import { JobExecutor } from './job-executor';
import {
  DEFAULT_JOBS_OPTIONS,
  JOBS_OPTIONS,
  JOBS_PROVIDERS,
  REDIS_BACKEND,
  RUNNERS,
  type JobsOptions,
} from './jobs.providers';
import { JobsBaseModule } from './jobs-base.module';
import { JobsRuntime } from './jobs.runtime';
import { JobsService } from './jobs.service';
import { GpuAllocator } from './gpu-allocator';
import { JobQueue, QUEUE_NAME, queueConfig } from './queue/bullmq.adapter';
import { JobRecordsRepository } from './queue/job-records.repository';
import type { RedisBackend } from './queue/redis-connection';
import { DockerRunner } from './runner/docker.runner';
import { JobIsolation } from './runner/isolation';
import { ProcessRunner } from './runner/process.runner';
import type { Runner } from './runner/runner';
import { ResultsStore } from './store/results.store';

/**
 * The job API and everything behind it, as Nest providers (jobs.providers.ts): the catalog, the
 * results store, Redis, the records, the queue, the GPU allocator, the runners, the ledger, the
 * executor and the service, each injected where it is used. The providers are async where they
 * start something: Nest awaits them while building the app, so the API listens only once Redis
 * and the queue are usable, and a bad experiment file or an evicting Redis stops the worker at
 * start. The two BullMQ queues go through @nestjs/bullmq: the shared config (`forRootAsync`, the
 * connection from REDIS_BACKEND, made once the records are) and `registerQueueAsync`; JobQueue
 * takes them by their tokens. Their workers are JobQueue's own (libs/jobs/README.md says why).
 * JobsRuntime starts the queue workers last and stops everything in order on app.close(); the
 * queues' own shutdown hook (BullModule's, a module JobsModule imports) runs after it, and finds
 * them closed.
 */
@Module({})
export class JobsModule {
  static forRoot(
    config: WorkerConfig,
    log: Logger,
    options: Partial<JobsOptions> = {},
  ): DynamicModule {
    const opts: JobsOptions = { ...DEFAULT_JOBS_OPTIONS, ...options };
    const base = JobsBaseModule.forRoot(config, log);
    return {
      module: JobsModule,
      imports: [
        base,
        BullModule.forRootAsync({
          imports: [base],
          // JobRecordsRepository only orders the start: the queues are made after the records.
          inject: [REDIS_BACKEND, JobRecordsRepository],
          useFactory: (backend: RedisBackend) => queueConfig(backend),
        }),
        // Each queue takes the shared config as a dependency of its own: registerQueue's is
        // @Optional, and Nest injects undefined for an optional one whose factory failed, so a
        // Redis that did not open (or a bad experiment before it) would still have had the
        // queues made, on BullMQ's default connection (localhost:6379).
        BullModule.registerQueueAsync(
          ...Object.values(QUEUE_NAME).map((name) => ({
            name,
            inject: [getSharedConfigToken()],
            useFactory: (shared: RegisterQueueOptions) => shared,
          })),
        ),
      ],
      controllers: [ExperimentsController, JobsController, JobOutputController],
      providers: [
        { provide: JOBS_OPTIONS, useValue: opts },
        ...JOBS_PROVIDERS,
        {
          provide: JobsRuntime,
          inject: [
            WORKER_CONFIG,
            JOBS_OPTIONS,
            LOGGER,
            ExperimentCatalog,
            ResultsStore,
            REDIS_BACKEND,
            JobRecordsRepository,
            JobQueue,
            GpuAllocator,
            DockerRunner,
            JobIsolation,
            ProcessRunner,
            RUNNERS,
            JobExecutor,
            JobsService,
          ],
          useFactory: async (
            config: WorkerConfig,
            options: JobsOptions,
            log: Logger,
            catalog: ExperimentCatalog,
            store: ResultsStore,
            backend: RedisBackend,
            records: JobRecordsRepository,
            queue: JobQueue,
            gpus: GpuAllocator,
            docker: DockerRunner,
            isolation: JobIsolation,
            processRunner: ProcessRunner,
            runners: Map<string, Runner>,
            executor: JobExecutor,
            service: JobsService,
          ) => {
            const rt = new JobsRuntime({
              config,
              options,
              log,
              catalog,
              store,
              backend,
              records,
              queue,
              gpus,
              docker,
              isolation,
              processRunner,
              runners,
              executor,
              service,
            });
            await rt.start();
            return rt;
          },
        },
      ],
      // The base module carries ResultsStore, ExperimentCatalog and JobRecordsRepository on.
      exports: [base, JobsRuntime, JobsService],
    };
  }
}
