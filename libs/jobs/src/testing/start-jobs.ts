import { NestFactory } from '@nestjs/core';
import type { Logger, WorkerConfig } from '../../../config/src';
import { JobsModule } from '../jobs.module';
import type { JobsOptions } from '../jobs.providers';
import { JobsRuntime } from '../jobs.runtime';

/**
 * The job system alone, as the worker builds it (JobsModule's providers in a Nest application
 * context, no HTTP): for integration tests that drive the runtime rather than the API. Rejects
 * with what stopped the start (a bad experiment file, an evicting Redis). `rt.close()` stops it.
 */
export async function startJobs(
  config: WorkerConfig,
  log: Logger,
  opts: Partial<JobsOptions> = {},
): Promise<JobsRuntime> {
  const app = await NestFactory.createApplicationContext(JobsModule.forRoot(config, log, opts), {
    logger: false,
    abortOnError: false,
  });
  return app.get(JobsRuntime);
}
