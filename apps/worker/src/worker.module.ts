import { Module, type DynamicModule } from '@nestjs/common';
import type { Logger, WorkerConfig } from '../../../libs/config/src';
import { JobsModule, type JobsOptions } from '../../../libs/jobs/src';
import { TestController } from './test.controller';

/** DI tokens for what the CLI hands the worker: its validated config and its logger. */
export const WORKER_CONFIG = Symbol('WORKER_CONFIG');
export const LOGGER = Symbol('LOGGER');

/** The worker's Nest application: the job API served on API_LISTEN. */
@Module({})
export class WorkerModule {
  static forRoot(
    config: WorkerConfig,
    logger: Logger,
    jobs: Partial<JobsOptions> = {},
  ): DynamicModule {
    return {
      module: WorkerModule,
      global: true,
      imports: [JobsModule.forRoot(config, logger, jobs)],
      controllers: [TestController],
      providers: [
        { provide: WORKER_CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
      ],
      exports: [WORKER_CONFIG, LOGGER],
    };
  }
}
