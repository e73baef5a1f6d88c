import { Inject, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type { Logger, WorkerConfig } from '../../config/src';
import { ExperimentsController } from './api/experiments.controller';
import { JobOutputController } from './api/job-output.controller';
import { JobsController } from './api/jobs.controller';
import { JobsRuntime, DEFAULT_JOBS_OPTIONS, type JobsOptions } from './jobs.runtime';

/** Stops the job system when the app closes (app.close() on SIGTERM). */
class JobsLifecycle implements OnApplicationShutdown {
  constructor(@Inject(JobsRuntime) private readonly rt: JobsRuntime) {}

  async onApplicationShutdown(): Promise<void> {
    await this.rt.close();
  }
}

/**
 * The job API and everything behind it. The runtime is an async provider: Nest awaits it while
 * building the app, so the API listens only once Redis and the queue are usable, and a bad
 * experiment file or an evicting Redis stops the worker at start.
 */
@Module({})
export class JobsModule {
  static forRoot(
    config: WorkerConfig,
    log: Logger,
    options: Partial<JobsOptions> = {},
  ): DynamicModule {
    const opts = { ...DEFAULT_JOBS_OPTIONS, ...options };
    return {
      module: JobsModule,
      controllers: [ExperimentsController, JobsController, JobOutputController],
      providers: [
        { provide: JobsRuntime, useFactory: () => JobsRuntime.start(config, log, opts) },
        JobsLifecycle,
      ],
      exports: [JobsRuntime],
    };
  }
}
