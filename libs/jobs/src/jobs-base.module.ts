import { Module, type DynamicModule } from '@nestjs/common';
import { LOGGER, WORKER_CONFIG, type Logger, type WorkerConfig } from '../../config/src';
import { JOBS_BASE_PROVIDERS } from './jobs.providers';

/**
 * What the job system's queues are made after: the config and the logger, then the experiments,
 * the results store, Redis (REDIS_BACKEND) and the records (JOBS_BASE_PROVIDERS, in that order).
 * A module of its own so that `BullModule.forRootAsync` can import it and take its connection
 * from REDIS_BACKEND; JobsModule imports the same instance (one module, one set of providers:
 * Nest tells dynamic modules apart by reference) and exports it on.
 */
@Module({})
export class JobsBaseModule {
  static forRoot(config: WorkerConfig, log: Logger): DynamicModule {
    const providers = [
      { provide: WORKER_CONFIG, useValue: config },
      { provide: LOGGER, useValue: log },
      ...JOBS_BASE_PROVIDERS,
    ];
    return {
      module: JobsBaseModule,
      providers,
      exports: providers.map((p) => p.provide),
    };
  }
}
